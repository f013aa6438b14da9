"""Perturbations of a keypoint stream, to measure robustness: noise, dropouts, occlusion bursts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lam_capture.skeleton import LEFT_HAND, RIGHT_HAND, Keypoints

# Landmarks an occluder (the other arm, an object) hides in a burst: both arms below the shoulder.
ARM_LANDMARKS = np.r_[13:23, LEFT_HAND:LEFT_HAND + 21, RIGHT_HAND:RIGHT_HAND + 21]


@dataclass
class PerturbConfig:
    """Noise std (m per coordinate), per-landmark dropout probability per frame, occlusion
    bursts per second and their duration (s). All zero = no perturbation."""

    noise: float = 0.0
    dropout: float = 0.0
    occlusion_rate: float = 0.0
    occlusion_duration: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None or not np.isfinite(value) or value < 0:
                raise ValueError(f"PerturbConfig.{name} must be finite and >= 0, got {value!r}")
        if self.dropout > 1:
            raise ValueError(f"PerturbConfig.dropout is a probability, got {self.dropout}")

    @property
    def active(self) -> bool:
        return self.noise > 0 or self.dropout > 0 or self.occlusion_rate > 0


class Perturber:
    """Applies a PerturbConfig to successive frames (seeded, reproducible)."""

    def __init__(self, config: PerturbConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self._occluded_until = -np.inf
        self._last_stamp: float | None = None

    def apply(self, kp: Keypoints) -> Keypoints:
        c = self.config
        points = kp.points + self.rng.normal(0.0, c.noise, kp.points.shape) if c.noise > 0 else kp.points.copy()
        conf = kp.confidence.copy()
        if c.dropout > 0:
            conf[self.rng.random(conf.shape) < c.dropout] = 0.0
        if c.occlusion_rate > 0 and self._last_stamp is not None:
            dt = max(kp.stamp - self._last_stamp, 0.0)
            if kp.stamp >= self._occluded_until and self.rng.random() < 1 - np.exp(-c.occlusion_rate * dt):
                self._occluded_until = kp.stamp + c.occlusion_duration
        if kp.stamp < self._occluded_until:
            conf[ARM_LANDMARKS] = 0.0
        self._last_stamp = kp.stamp
        return Keypoints(points, conf, kp.stamp, kp.skeleton)
