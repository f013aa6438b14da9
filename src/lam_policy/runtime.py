"""Inference runtime of a learned policy in the graph: the latest observations in, one action
chunk out per step. Pure (no rclpy): policy_node's `lam` mode feeds it messages' contents.

Each step the policy predicts a K-step chunk; the first point is the temporally ensembled action
(what ``select_action`` returns), the others the newest chunk's plan, at ``1/fps`` spacing. The
control node follows the chunk until the next one replaces it, so a late inference step never
leaves the arm without a plan (and its watchdog still stops it when steps stop coming).
"""
from __future__ import annotations

import time

import numpy as np

from lam_capture.skeleton import Keypoints
from lam_control.robot import RobotConfig
from lam_policy.features import TcpFeature
from lam_policy.frames import KEYPOINTS, OBJECT_POSES, STATE, TCP, flatten_keypoints
from lam_policy.policy_base import load_policy


class ObservationError(ValueError):
    """Observations the policy cannot use (wrong shape, unknown joints)."""


class LamRuntime:
    """Latest-only observation cache + the policy. ``step()`` returns (times, positions) or None."""

    def __init__(self, checkpoint: str, robot_joints: list[str], device: str = "auto",
                 max_state_age: float = 0.5, threads: int = 1, robot: RobotConfig | None = None):
        # One intra-op thread: on a 2-core robot PC, two threads contend with the other nodes and
        # ACT's p99 grew from ~3 ms to hundreds (measured by bench_policy).
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        # The checkpoint must command exactly this robot's joints (by name, refused otherwise).
        self.policy = load_policy(checkpoint, expected_joint_names=list(robot_joints), device=device)
        self.joint_names = list(self.policy.joint_names)
        self.keys = tuple(self.policy.config.observation_keys)
        # observation.tcp: forward kinematics of the robot being commanded (default: the sim arm).
        self._tcp = TcpFeature(robot or RobotConfig(), self.joint_names) if TCP in self.keys else None
        self._tcp_objects = TCP in self.keys and self.policy.features[TCP] > 3
        self.fps = self.policy.fps
        self.max_state_age = max_state_age
        self._q = {n: np.nan for n in self.joint_names}
        self._state_time = -np.inf
        self._objects: np.ndarray | None = None
        self._keypoints: np.ndarray | None = None
        self.latency: list[float] = []

    # -- observations (latest only) ---------------------------------------------------------------
    def update_state(self, names, positions, now: float) -> None:
        for name, value in zip(names, positions):
            if name in self._q and np.isfinite(value):
                self._q[name] = float(value)
        self._state_time = now

    def update_objects(self, poses: np.ndarray) -> None:
        poses = np.asarray(poses, dtype=float).reshape(-1)
        width = self.policy.features.get(OBJECT_POSES)
        if width is None and self._tcp_objects:
            width = (self.policy.features[TCP] - 3) // 3 * 7
        if width is not None and poses.size != width:
            raise ObservationError(f"object poses have {poses.size} values; the policy was trained on {width}")
        if np.all(np.isfinite(poses)):
            self._objects = poses

    def update_keypoints(self, kp: Keypoints) -> None:
        flat = flatten_keypoints(kp)
        if np.all(np.isfinite(flat)):
            self._keypoints = flat

    def ready(self, now: float) -> str:
        """'' when every observation the policy needs is here and fresh, else what is missing."""
        if not all(np.isfinite(v) for v in self._q.values()):
            return "no joint state yet"
        if now - self._state_time > self.max_state_age:
            return f"joint state older than {self.max_state_age} s"
        if (OBJECT_POSES in self.keys or self._tcp_objects) and self._objects is None:
            return "no object poses yet"
        if KEYPOINTS in self.keys and self._keypoints is None:
            return "no operator keypoints yet"
        return ""

    def reset(self) -> None:
        """New episode: forget history and queued chunks."""
        self.policy.reset()

    # -- inference ------------------------------------------------------------------------------
    def step(self, now: float) -> tuple[np.ndarray, np.ndarray] | None:
        if self.ready(now):
            return None
        obs = {STATE: np.array([self._q[n] for n in self.joint_names])}
        if OBJECT_POSES in self.keys:
            obs[OBJECT_POSES] = self._objects
        if KEYPOINTS in self.keys:
            obs[KEYPOINTS] = self._keypoints
        if self._tcp is not None:
            obs[TCP] = self._tcp.compute(obs[STATE], self._objects if self._tcp_objects else None)
        t0 = time.perf_counter()
        times, plan = self.policy.select_plan(obs)
        self.latency.append(time.perf_counter() - t0)
        if not np.all(np.isfinite(plan[0])):
            raise ObservationError("the policy produced a non-finite action")
        return times, plan
