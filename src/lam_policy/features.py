"""Derived observation features: the TCP and where each task object is from it.

``observation.tcp`` (3 + 3M): the TCP position in the robot base frame, by forward kinematics of
the joint state, then each of the M task objects' positions minus the TCP position. A policy that
sees the remaining distance to the object can close it (measured on `reach`, small ACT, 50 demos:
70% success without the feature, 95% with it and ``relative_actions``); learning forward
kinematics from a few thousand frames is what it otherwise has to do.

One class computes it everywhere it is needed, so training, ``lam eval`` and policy_node agree:
the dataset (``add_tcp_feature``), the sim evaluation and the runtime (``TcpFeature.compute``).
The robot is the one the policy commands; its joint names must be the policy's.
"""
from __future__ import annotations

import numpy as np

from lam_control.robot import RobotConfig
from lam_policy.frames import OBJECT_POSES, STATE, TCP, Frames

POSE_WIDTH = 7  # x y z qx qy qz qw per object in observation.object_poses


class TcpFeature:
    """Forward kinematics of ``joint_names`` (a state vector's columns) to the TCP, and the
    ``observation.tcp`` feature from a state and the flattened object poses."""

    def __init__(self, robot: RobotConfig, joint_names: list[str]):
        self.model = robot.load_model()
        missing = [j for j in robot.joint_names if j not in joint_names]
        if missing:
            raise ValueError(f"observation.tcp needs every arm joint in the state; {missing} are not in "
                             f"{list(joint_names)}")
        index = {n: i for i, n in enumerate(joint_names)}
        # Columns of the state that fill the model's configuration; the rest of it stays 0.
        self.columns = [(k, index[n]) for k, n in enumerate(self.model.joint_names) if n in index]
        self.ee = self.model.link_index[robot.ee_link]

    def tcp(self, state: np.ndarray) -> np.ndarray:
        """TCP position (3,) for one state vector in ``joint_names`` order."""
        q = np.zeros(len(self.model.joint_names))
        for k, i in self.columns:
            q[k] = state[i]
        return self.model.forward(q)[self.ee, :3, 3]

    def compute(self, state: np.ndarray, object_poses: np.ndarray | None) -> np.ndarray:
        """observation.tcp (3 + 3M,) from one state (S,) and the object poses (7M,) or None."""
        tcp = self.tcp(np.asarray(state, dtype=float))
        if object_poses is None:
            return tcp
        poses = np.asarray(object_poses, dtype=float).reshape(-1)
        if poses.size % POSE_WIDTH:
            raise ValueError(f"object poses must be {POSE_WIDTH} values per object, got {poses.size}")
        offsets = poses.reshape(-1, POSE_WIDTH)[:, :3] - tcp
        return np.concatenate([tcp, offsets.reshape(-1)])


def add_tcp_feature(frames: Frames, robot: RobotConfig | None = None) -> Frames:
    """``frames`` with ``observation.tcp`` added (computed from the state and object poses)."""
    feature = TcpFeature(robot or RobotConfig(), frames.joint_names)
    state = frames.data[STATE].astype(np.float64)
    poses = frames.data.get(OBJECT_POSES)
    rows = [feature.compute(q, None if poses is None else poses[i]) for i, q in enumerate(state)]
    data = dict(frames.data)
    data[TCP] = np.asarray(rows, dtype=np.float32)
    return Frames(data, frames.joint_names, frames.fps)
