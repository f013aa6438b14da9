"""A physical arm behind ros2_control's joint_trajectory_controller.

Commands stream as one-point JointTrajectory messages on the controller's topic (QoS compatible
with its system-default subscription); state comes from /joint_states (joint_state_broadcaster).
The safety filter of the Arm base class gates every setpoint, as on the simulator.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from lam_control.arm import Arm, ArmState
from lam_control.robot import RobotConfig
from lam_control.ros_convert import trajectory_msg
from lam_control.ros_qos import COMMAND_QOS, SENSOR_QOS
from lam_control.safety import SafetyConfig, SafetyStatus

log = logging.getLogger(__name__)

# The controller subscribes with rclcpp::SystemDefaultsQoS, which the RMW resolves to its own
# default (best effort on Fast DDS, reliable elsewhere); a reliable, volatile publisher matches both.
CONTROLLER_QOS = COMMAND_QOS


class RosControlArm(Arm):
    """Arm backend for ros2_control. ``node`` owns the publisher and the subscription."""

    def __init__(self, node, robot: RobotConfig, safety: SafetyConfig, *, controller_topic: str,
                 joint_states_topic: str = "/joint_states", state_timeout: float = 0.5,
                 lookahead: float = 0.05, callback_group=None):
        super().__init__(robot, safety)
        if not state_timeout > 0 or not lookahead > 0:
            raise ValueError(f"state_timeout and stream_lookahead must be > 0, got "
                             f"{state_timeout}, {lookahead}")
        self.state_timeout, self.lookahead = state_timeout, lookahead
        self.controller_topic = controller_topic
        self._pub = node.create_publisher(JointTrajectory, controller_topic, CONTROLLER_QOS)
        self._sub = node.create_subscription(JointState, joint_states_topic, self._on_joint_state,
                                             SENSOR_QOS, callback_group=callback_group)
        n = len(self.joint_names)
        self._pos = np.full(n, np.nan)
        self._vel = np.zeros(n)
        self._seen = np.full(n, -np.inf)  # monotonic receipt time per joint
        self._index = {name: i for i, name in enumerate(self.joint_names)}

    def _on_joint_state(self, msg: JointState) -> None:
        now = time.monotonic()
        for k, name in enumerate(msg.name):
            i = self._index.get(name)
            if i is None or k >= len(msg.position):
                continue
            value = msg.position[k]
            if not np.isfinite(value):
                continue  # a broken reading is treated as a missing one (state goes stale)
            self._pos[i] = value
            self._vel[i] = msg.velocity[k] if k < len(msg.velocity) and np.isfinite(msg.velocity[k]) else 0.0
            self._seen[i] = now

    def state_age(self, now: float | None = None) -> float:
        """Seconds since the oldest joint was last reported (inf before all were seen)."""
        now = time.monotonic() if now is None else now
        return float(now - self._seen.min())

    def read_state(self) -> ArmState | None:
        if self.state_age() > self.state_timeout:
            return None
        return ArmState(self._pos.copy(), self._vel.copy(), float(self._seen.max()))

    def tick(self, now: float) -> SafetyStatus | None:
        if self.filter is not None and self.state_age() > self.state_timeout:
            self.filter.latch_fault(f"no {self._sub.topic_name} for more than {self.state_timeout} s")
        return super().tick(now)

    def _write(self, positions: np.ndarray, velocities: np.ndarray, now: float) -> None:
        if self.filter is not None and self.filter.fault:
            # Faulted (stale feedback, bad command): stop streaming and let the controller hold
            # on its own. The arm may be moved while its driver is down; resending an old
            # setpoint then would jump it back. reset() resynchronises to the measured pose.
            return
        # Header stamp zero: the controller starts the point on receipt.
        self._pub.publish(trajectory_msg(self.joint_names, [self.lookahead], [positions]))
