"""lam_control: robot backends (PyBullet, ros2_control), the safety filter and control_node."""
