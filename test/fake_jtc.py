"""A test double of a physical arm behind ros2_control, for node tests without hardware.

One node plays joint_trajectory_controller (commands in) and joint_state_broadcaster
(/joint_states out) over the project's URDF, so control_node's ros2_control backend can be
tested end to end: QoS compatibility, joint matching by name, limits, and stale-state faults.
"""
from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_system_default
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from lam_control.robot import RobotConfig
from lam_control.ros_convert import joint_state_msg

# Exactly what the real controller subscribes with (rclcpp::SystemDefaultsQoS), so a publisher
# whose QoS is incompatible with it is caught here rather than on the robot.
COMMAND_QOS = qos_profile_system_default
# joint_state_broadcaster publishes with the system defaults too.
STATE_QOS = qos_profile_system_default

UPDATE_RATE = 250.0  # Hz, integration of the joint motion
STATE_RATE = 100.0  # Hz, /joint_states
MAX_STEP = 0.05  # s; a stalled executor must not teleport the arm when it wakes up


class FakeJointTrajectoryController(Node):
    """joint_trajectory_controller + joint_state_broadcaster of an arm that is not there.

    Subscribes: ``/<name>/joint_trajectory`` (trajectory_msgs/JointTrajectory, COMMAND_QOS).
    A message naming a joint the controller does not own, missing one of its joints
    (allow_partial_joints_goal: false), or with a malformed or non-finite point is rejected
    and counted in ``rejected``; every message received is kept in ``messages``. An accepted
    message's last point becomes the target; an empty one holds where the arm is.
    Publishes: /joint_states (sensor_msgs/JointState, every owned joint, position and velocity,
    STATE_QOS) at STATE_RATE. Each joint moves towards the target no faster than its URDF
    velocity limit, integrated at UPDATE_RATE.
    Fault injection: pause_states() / resume_states() stop and restart /joint_states (an
    unplugged encoder or driver) while the joints keep moving.
    """

    def __init__(self, name: str = "joint_trajectory_controller", robot: RobotConfig | None = None,
                 initial=None, **kwargs):
        super().__init__(name, **kwargs)
        robot = robot or RobotConfig()
        model = robot.load_model()
        self.joint_names = robot.command_joints
        n = len(self.joint_names)
        self.velocity_limit = model.velocity[:n].copy()  # rad/s or m/s, URDF
        start = robot.home_positions() if initial is None else np.asarray(initial, dtype=float)
        if start.shape != (n,) or not np.all(np.isfinite(start)):
            raise ValueError(f"initial position must be {n} finite values over {self.joint_names}, got {start}")
        self.positions = start.copy()  # (J,)
        self.velocities = np.zeros(n)  # (J,)
        self.target = start.copy()  # (J,)
        self.messages: list[tuple[float, JointTrajectory]] = []  # (monotonic receipt time, message)
        self.accepted: list[tuple[float, np.ndarray]] = []  # (time, target (J,) in joint_names order)
        self.rejected = 0
        self.publishing = True
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self._last_update = time.monotonic()
        self.sub = self.create_subscription(JointTrajectory, f"/{name}/joint_trajectory", self._on_command,
                                            COMMAND_QOS)
        self.state_pub = self.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.create_timer(1.0 / UPDATE_RATE, self._update)
        self.create_timer(1.0 / STATE_RATE, self._publish_states)

    def pause_states(self) -> None:
        """Stop publishing /joint_states, as an unplugged encoder or a dead driver would."""
        self.publishing = False

    def resume_states(self) -> None:
        self.publishing = True

    def _on_command(self, msg: JointTrajectory) -> None:
        self.messages.append((time.monotonic(), msg))
        names = list(msg.joint_names)
        if set(names) != set(self._index) or len(names) != len(self._index):
            self.rejected += 1  # a joint it does not own, or not all of its joints
            self.get_logger().error(f"rejected trajectory over joints {names}; this controller owns "
                                    f"{self.joint_names}", throttle_duration_sec=1.0)
            return
        if not msg.points:
            self.target = self.positions.copy()  # an empty trajectory: stop where the arm is
            return
        point = np.asarray(msg.points[-1].positions, dtype=float)
        if point.shape != (len(names),) or not np.all(np.isfinite(point)):
            self.rejected += 1
            self.get_logger().error(f"rejected trajectory point {point.tolist()}", throttle_duration_sec=1.0)
            return
        target = np.empty(len(names))
        for k, joint in enumerate(names):
            target[self._index[joint]] = point[k]
        self.target = target
        self.accepted.append((time.monotonic(), target.copy()))

    def _update(self) -> None:
        now = time.monotonic()
        dt = min(now - self._last_update, MAX_STEP)
        self._last_update = now
        if dt <= 0:
            return
        step = np.clip(self.target - self.positions, -self.velocity_limit * dt, self.velocity_limit * dt)
        self.positions = self.positions + step
        self.velocities = step / dt

    def _publish_states(self) -> None:
        if self.publishing:
            self.state_pub.publish(joint_state_msg(self.joint_names, self.positions, self.velocities,
                                                   stamp=self.get_clock().now().to_msg()))
