"""player_node: plays a recorded joint trajectory into /lam/joint_command as streamed chunks.

Each ``chunk_period`` it publishes the next ``horizon`` seconds of the recording as a
JointTrajectory with time_from_start relative to now, the way a learned policy streams action
chunks. Used by `lam demo` and, later, `lam replay`.
"""
from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from lam_control.ros_convert import trajectory_msg
from lam_control.ros_qos import COMMAND_QOS



class PlayerNode(Node):
    """Streams ``positions`` (N, J) at ``times`` (N,) s over ``joint_names``.

    Publishes: /lam/joint_command (trajectory_msgs/JointTrajectory, COMMAND_QOS).
    Starts after ``start_delay`` s (lets subscribers match); ``done`` once the recording ended.
    """

    def __init__(self, joint_names, times, positions, *, chunk_period: float = 0.05,
                 horizon: float = 0.25, start_delay: float = 1.0, **kwargs):
        super().__init__("player_node", **kwargs)
        self.joint_names = list(joint_names)
        self.times = np.asarray(times, dtype=float)
        self.positions = np.asarray(positions, dtype=float)
        if self.positions.shape != (len(self.times), len(self.joint_names)):
            raise ValueError(f"positions shape {self.positions.shape} does not match "
                             f"{len(self.times)} times x {len(self.joint_names)} joints")
        self.horizon = horizon
        self.pub = self.create_publisher(JointTrajectory, "/lam/joint_command", COMMAND_QOS)
        self.start = time.monotonic() + start_delay
        self.done = False
        self.sent = 0
        self.create_timer(chunk_period, self._on_timer)

    def _on_timer(self) -> None:
        t = time.monotonic() - self.start
        if t < 0 or self.done:
            return
        if t > self.times[-1]:
            self.done = True
            return
        sel = (self.times > t) & (self.times <= t + self.horizon)
        if not np.any(sel):
            sel = self.times >= self.times[-1]
        self.pub.publish(trajectory_msg(self.joint_names, self.times[sel] - t, self.positions[sel]))
        self.sent += 1
