"""policy_node in `lam` mode on real rclpy: a checkpoint drives the sim arm with action chunks,
inference latency shows on /diagnostics, and a checkpoint for another robot is refused."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.qos import qos_profile_system_default
from trajectory_msgs.msg import JointTrajectory

from lam_control.control_node import ControlNode
from lam_control.monitor_node import MonitorNode
from lam_control.resources import share_file
from lam_control.robot import RobotConfig
from lam_control.ros_graph import Graph, GraphError, overrides
from lam_policy.act import ACTConfig, ACTPolicy
from lam_policy.frames import ACTION, STATE
from lam_policy.policy_node import PolicyNode

from ros_helpers import domain_id, positions_by_name

ROBOT = RobotConfig()
TARGET = np.array([0.3, 0.7, 0.0, 1.2, 0.0, 0.9, 0.0, 0.02, 0.02])  # rad (arm), m (fingers)


def constant_policy(path, joint_names, target) -> None:
    """A real ACT checkpoint whose every output is ``target``: zero weights in the action head,
    the target as its normalisation mean (so the test knows what the arm must reach)."""
    n = len(joint_names)
    policy = ACTPolicy(ACTConfig(chunk=10, use_vae=False, relative_actions=False, device="cpu"), {STATE: n, ACTION: n},
                       joint_names, 30.0,
                       stats={STATE: {"mean": [0.0] * n, "std": [1.0] * n},
                              ACTION: {"mean": list(map(float, target)), "std": [1.0] * n}})
    head = [m for m in policy.modules() if hasattr(m, "weight") and getattr(m, "out_features", 0) == n][-1]
    head.weight.data.zero_()
    head.bias.data.zero_()
    policy.save(path)


class Listener(Node):
    def __init__(self, **kwargs):
        super().__init__("test_listener", **kwargs)
        self.chunks: list[JointTrajectory] = []
        self.create_subscription(JointTrajectory, "/lam/joint_command", self.chunks.append, qos_profile_system_default)


def test_lam_mode_drives_the_arm_with_chunks(tmp_path):
    constant_policy(tmp_path / "ckpt", ROBOT.command_joints, TARGET)
    params = [share_file("config/control.yaml"), share_file("config/policy.yaml")]
    with Graph(params, domain_id=domain_id()) as graph:
        graph.add(ControlNode)
        monitor = graph.add(MonitorNode)
        listener = graph.add(Listener)
        policy = graph.add(PolicyNode, parameter_overrides=overrides(mode="lam", checkpoint=str(tmp_path / "ckpt"),
                                                                     device="cpu"))
        graph.spin(duration=8.0)
        diag = [d for _, d in monitor.diagnostics if d["_name"] == "lam policy: lam"]
    assert len(listener.chunks) > 100, "about 30 chunks per second expected"
    chunk = listener.chunks[-1]
    assert list(chunk.joint_names) == ROBOT.command_joints
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in chunk.points]
    assert len(times) == 10 and np.allclose(np.diff(times), 1 / 30.0, atol=1e-6)
    q = positions_by_name(monitor.states, ROBOT.command_joints)
    assert np.abs(q[-1] - TARGET).max() < 0.01, q[-1]
    assert policy.counts["rejected_actions"] == 0
    assert diag and float(diag[-1]["inference_p99_ms"]) > 0


def test_a_checkpoint_for_another_robot_is_refused(tmp_path):
    names = [f"joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
    constant_policy(tmp_path / "panda", names, np.zeros(9))
    with Graph([share_file("config/policy.yaml")], domain_id=domain_id()) as graph:
        with pytest.raises(GraphError, match="joint names do not match"):
            graph.add(PolicyNode, parameter_overrides=overrides(mode="lam", checkpoint=str(tmp_path / "panda")))
        with pytest.raises(GraphError, match="checkpoint"):
            graph.add(PolicyNode, parameter_overrides=overrides(mode="lam"))
