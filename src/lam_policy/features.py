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
import torch

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


class StateNoise:
    """Training augmentation against drift: a ``fraction`` of the training windows see their
    joint-state history shifted by one Gaussian offset (``std`` rad, or m for a prismatic joint,
    on the ``joints`` columns), with ``observation.tcp`` recomputed for the shifted state, while
    the action targets stay the demonstrator's.

    Demonstrations never leave their path, so a policy trained on them alone has never seen how to
    come back: with relative actions its small errors integrate, and on ``reach`` it drifted past
    the marker after passing within 2-3 cm. Shown shifted states with unshifted targets, it learns
    to steer back (the idea of DART, Laskey et al. 2017, applied to the data instead of to the
    demonstrator). Draws come from torch's CPU generator, so a seeded run is reproducible and a
    resumed one continues the same stream."""

    def __init__(self, joint_names: list[str], joints: list[str], std: float, fraction: float,
                 tcp: TcpFeature | None = None):
        unknown = [j for j in joints if j not in joint_names]
        if unknown:
            raise ValueError(f"state noise joints {unknown} are not among the state's {list(joint_names)}")
        self.columns = [joint_names.index(j) for j in joints]
        self.std, self.fraction, self.tcp = float(std), float(fraction), tcp

    def __call__(self, batch: dict) -> dict:
        """``batch`` ({key: (B, H, D)} windows, WindowSource's) with the state (and TCP) of about
        ``fraction`` x B windows shifted; the input is left unchanged."""
        state = batch[STATE]
        b, _, width = state.shape
        picked = torch.rand(b) < self.fraction
        if not self.columns or not bool(picked.any()):
            return batch
        offset = torch.zeros(b, 1, width, dtype=torch.float64)
        offset[:, 0, self.columns] = torch.randn(b, len(self.columns), dtype=torch.float64) * self.std
        offset[~picked] = 0.0
        out = dict(batch)
        shifted = state.detach().cpu().double() + offset
        out[STATE] = shifted.to(state.dtype).to(state.device)
        if self.tcp is not None and TCP in batch:
            out[TCP] = self._moved_tcp(batch[TCP], shifted, picked)
        return out

    def _moved_tcp(self, tcp: torch.Tensor, shifted: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
        """observation.tcp for the shifted states: the TCP by forward kinematics, and each object's
        offset from it moved by the same amount (the objects stay where they were)."""
        moved = tcp.detach().cpu().double().clone()
        for i in torch.nonzero(picked).flatten().tolist():
            for h in range(shifted.shape[1]):
                new = torch.as_tensor(self.tcp.tcp(shifted[i, h].numpy()))
                delta = new - moved[i, h, :3]
                moved[i, h, :3] = new
                moved[i, h, 3:] -= delta.repeat((moved.shape[2] - 3) // 3)
        return moved.to(tcp.dtype).to(tcp.device)
