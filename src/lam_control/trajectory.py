"""Joint trajectories as the control core sees them: named, timed, matched to an arm by name."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TrajectoryError(ValueError):
    """A command that cannot be executed as given (names, shapes or times are wrong)."""


@dataclass(frozen=True)
class Trajectory:
    """A JointTrajectory in core types: ``positions[i]`` is reached ``times[i]`` s after receipt."""

    joint_names: tuple[str, ...]
    times: np.ndarray  # (N,) time_from_start, s
    positions: np.ndarray  # (N, len(joint_names)), rad or m

    @classmethod
    def build(cls, joint_names, times, positions) -> "Trajectory":
        """Validate structure (not values: non-finite positions are the safety filter's to judge)."""
        names = tuple(joint_names)
        if len(set(names)) != len(names):
            raise TrajectoryError(f"joint names repeat: {list(names)}")
        times = np.asarray(times, dtype=float).reshape(-1)
        rows = [np.asarray(p, dtype=float).reshape(-1) for p in positions]
        if len(rows) != len(times):
            raise TrajectoryError(f"{len(rows)} points but {len(times)} times")
        for i, row in enumerate(rows):
            if row.shape[0] != len(names):
                raise TrajectoryError(f"point {i} has {row.shape[0]} positions for {len(names)} joints")
        if not np.all(np.isfinite(times)) or np.any(times < 0):
            raise TrajectoryError(f"time_from_start must be finite and >= 0, got {times.tolist()}")
        if np.any(np.diff(times) <= 0):
            raise TrajectoryError(f"time_from_start must strictly increase, got {times.tolist()}")
        positions = np.stack(rows) if rows else np.zeros((0, len(names)))
        return cls(names, times, positions)

    def for_joints(self, joints: list[str], current: np.ndarray) -> np.ndarray:
        """Points over ``joints`` (N, J); joints the command leaves out keep ``current``."""
        unknown = [n for n in self.joint_names if n not in joints]
        if unknown:
            raise TrajectoryError(f"unknown joints {unknown}; this arm takes {joints}")
        out = np.tile(np.asarray(current, dtype=float), (len(self.times), 1))
        for k, name in enumerate(self.joint_names):
            out[:, joints.index(name)] = self.positions[:, k]
        return out


class TrajectoryFollower:
    """Piecewise-linear interpolation from the position held at receipt through the points."""

    def __init__(self, start_time: float, start: np.ndarray, times: np.ndarray, points: np.ndarray):
        self.start_time = start_time
        self.times = np.concatenate([[0.0], times]) if times[0] > 0 else times
        self.points = np.vstack([start, points]) if times[0] > 0 else points

    def sample(self, now: float) -> np.ndarray:
        """Desired position (J,) at time ``now``; the last point once the trajectory is over."""
        t = now - self.start_time
        if t >= self.times[-1]:
            return self.points[-1].copy()
        k = int(np.searchsorted(self.times, t, side="right"))
        if k == 0:
            return self.points[0].copy()
        t0, t1 = self.times[k - 1], self.times[k]
        w = (t - t0) / (t1 - t0)
        return (1 - w) * self.points[k - 1] + w * self.points[k]
