"""Shared test setup: a unique ROS_DOMAIN_ID per test process, so parallel runs never cross-talk."""
import os

# Set before any rclpy context exists; subprocesses started by tests inherit it.
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
