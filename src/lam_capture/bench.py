"""`lam bench` capture section: frames per second and per-frame latency on 640x480 frames."""
from __future__ import annotations

import time

import numpy as np

from lam_capture.estimator import EstimatorConfig, PoseEstimator
from lam_capture.synthetic import moving_photo


def bench_estimator(hands: bool, frames: int = 90) -> dict:
    """MediaPipe Pose (+ Hands) in tracking mode on a moving real photograph at 640x480."""
    from skimage import data

    images = list(moving_photo(data.astronaut(), frames))
    est = PoseEstimator(EstimatorConfig(hands=hands))
    try:
        est.estimate(images[0], 0.0)  # warm-up: graph start and first detection
        samples = []
        for k, img in enumerate(images[1:]):
            t0 = time.perf_counter()
            est.estimate(img, float(k))
            samples.append(time.perf_counter() - t0)
    finally:
        est.close()
    a = np.asarray(samples)
    return {"frames": len(a), "fps": round(1.0 / a.mean(), 1),
            "latency_p50_ms": round(float(np.percentile(a, 50)) * 1e3, 2),
            "latency_p95_ms": round(float(np.percentile(a, 95)) * 1e3, 2)}


def run_capture_benchmarks() -> dict:
    return {"capture_pose_640x480": bench_estimator(hands=False),
            "capture_pose_hands_640x480": bench_estimator(hands=True)}
