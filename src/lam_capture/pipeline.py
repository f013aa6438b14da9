"""The capture loop's core: source -> estimator -> cleaner, with timing and health figures."""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from lam_capture.estimator import PoseEstimator
from lam_capture.filters import KeypointCleaner
from lam_capture.perturb import Perturber
from lam_capture.skeleton import Keypoints
from lam_capture.sources import Source

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """One pass of the loop. ``keypoints`` is None when nothing should be published."""

    keypoints: Keypoints | None
    frame_stamp: float | None  # monotonic capture time of the frame, None if no frame came
    latency: float | None  # s from capture to the end of processing


class CapturePipeline:
    """Pulls the newest frame, estimates keypoints (unless the source provides them), cleans."""

    def __init__(self, source: Source, estimator: PoseEstimator | None, cleaner: KeypointCleaner,
                 perturber: Perturber | None = None):
        self.source, self.estimator, self.cleaner, self.perturber = source, estimator, cleaner, perturber
        self.frame_log: deque = deque(maxlen=100_000)  # (frame index, capture stamp), for metrics
        self.latencies: deque = deque(maxlen=300)
        self.published: deque = deque(maxlen=300)  # monotonic times of published frames
        self.frames = 0
        self.no_person = 0
        self.published_frames = 0  # frames the cleaner let through, since start

    def step(self, timeout: float = 0.5) -> StepResult:
        frame = self.source.read(timeout)
        if frame is None:
            return StepResult(None, None, None)
        self.frames += 1
        self.frame_log.append((frame.index, frame.stamp))
        raw = frame.keypoints
        if raw is None:
            if self.estimator is None:
                raise RuntimeError(f"source {self.source.spec!r} gives images but no estimator is configured")
            estimate = self.estimator.estimate(frame.image, frame.stamp)
            raw = None if estimate is None else estimate.keypoints
        if raw is not None and self.perturber is not None:
            raw = self.perturber.apply(raw)
        if raw is None:
            self.no_person += 1
        clean = self.cleaner.update(raw)  # None (no person) advances the cleaner's lost timer
        done = time.monotonic()
        latency = done - frame.stamp
        self.latencies.append(latency)
        if clean is not None:
            self.published.append(done)
            self.published_frames += 1
        return StepResult(clean, frame.stamp, latency)

    def rate(self) -> float:
        """Published frames per second over the recent window."""
        if len(self.published) < 2:
            return 0.0
        return (len(self.published) - 1) / max(self.published[-1] - self.published[0], 1e-9)

    def latency_percentiles(self) -> tuple[float, float]:
        """(p50, p95) processing latency in seconds over the recent window (nan when empty)."""
        if not self.latencies:
            return float("nan"), float("nan")
        a = np.asarray(self.latencies)
        return float(np.percentile(a, 50)), float(np.percentile(a, 95))

    def close(self) -> None:
        self.source.close()
        if self.estimator is not None:
            self.estimator.close()

