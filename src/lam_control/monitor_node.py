"""monitor_node: records what the arm reports, for `lam demo`, benchmarks and tests.

Subscribes /joint_states and /lam/applied_command (sensor_msgs/JointState), /lam/joint_command
(receipt time and header stamp only) and /diagnostics (diagnostic_msgs/DiagnosticArray) with default-compatible QoS; keeps everything in memory with
a monotonic receipt time.
"""
from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from lam_control.ros_qos import RECORD_QOS



class MonitorNode(Node):
    """Keeps (receipt time, names, positions) per JointState topic and every diagnostics status."""

    def __init__(self, **kwargs):
        super().__init__("monitor_node", **kwargs)
        self.states: list[tuple[float, list[str], np.ndarray]] = []
        self.applied: list[tuple[float, list[str], np.ndarray]] = []
        self.diagnostics: list[tuple[float, dict]] = []
        self.commands: list[tuple[float, int, int]] = []  # (monotonic, ROS receipt ns, header stamp ns)
        self.create_subscription(JointState, "/joint_states", lambda m: self._keep(self.states, m), RECORD_QOS)
        self.create_subscription(JointState, "/lam/applied_command", lambda m: self._keep(self.applied, m),
                                 RECORD_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RECORD_QOS)
        self.create_subscription(JointTrajectory, "/lam/joint_command", self._on_command, RECORD_QOS)

    def _on_command(self, msg: JointTrajectory) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.commands.append((time.monotonic(), self.get_clock().now().nanoseconds, stamp))

    @staticmethod
    def _keep(store: list, msg: JointState) -> None:
        store.append((time.monotonic(), list(msg.name), np.array(msg.position)))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        for status in msg.status:
            entry = {kv.key: kv.value for kv in status.values}
            entry.update(_name=status.name, _level=status.level[0] if isinstance(status.level, bytes)
                         else int(status.level), _message=status.message)
            self.diagnostics.append((now, entry))
