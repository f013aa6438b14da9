"""Helpers for node tests on real rclpy: an outside 'operator' node and bounded waits."""
from __future__ import annotations

import os
import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_system_default
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lam_control.ros_convert import trajectory_msg


def domain_id() -> int:
    return int(os.environ["ROS_DOMAIN_ID"])


class Operator(Node):
    """Publishes commands and e-stops with default QoS, like any user's node would."""

    def __init__(self, **kwargs):
        super().__init__("test_operator", **kwargs)
        self.cmd = self.create_publisher(JointTrajectory, "/lam/joint_command", qos_profile_system_default)
        self.estop_pub = self.create_publisher(Bool, "/lam/estop", qos_profile_system_default)
        self.reset_client = self.create_client(Trigger, "/lam/reset")
        self.last_sent = None

    def send(self, names, positions, t=0.0) -> None:
        self.cmd.publish(trajectory_msg(names, [t], [positions]))
        self.last_sent = time.monotonic()

    def send_chunk(self, names, times, positions) -> None:
        self.cmd.publish(trajectory_msg(names, times, positions))
        self.last_sent = time.monotonic()

    def estop(self) -> None:
        self.estop_pub.publish(Bool(data=True))


def stream(graph, operator, names, target, seconds, rate=20.0, t=0.2) -> None:
    """Publish the same one-point command at ``rate`` Hz for ``seconds`` while spinning."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        operator.send(names, target, t)
        graph.spin(duration=1.0 / rate)


def positions_by_name(entries, names) -> np.ndarray:
    """(N, J) positions from MonitorNode entries (t, names, positions), columns in ``names`` order."""
    if not entries:
        return np.zeros((0, len(names)))
    idx = [entries[0][1].index(n) for n in names]
    return np.array([q[idx] for _, _, q in entries])


def stop_process(proc, timeout: float = 10.0) -> None:
    """SIGINT a still-running subprocess (a clean ROS shutdown), kill it if it does not exit."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
