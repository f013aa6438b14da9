"""`lam bench` teleoperation section: retargeting time per frame and end-to-end latency."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from lam_capture.mocap import MocapSource
from lam_capture.sources import SourceOptions
from lam_control.robot import RobotConfig, panda
from lam_policy.ik import bench_ik
from lam_policy.retarget import RetargetConfig, Retargeter


def bench_retarget(clip: str = "dance_a") -> dict:
    """Retargeting + IK per frame on a real mocap clip, warm-started as in teleoperation."""
    frames = MocapSource(clip, SourceOptions()).all_keypoints()
    robot = RobotConfig()
    rt = Retargeter(robot, RetargetConfig(calibration_frames=1))
    q = robot.home_positions()
    samples = []
    for kp in frames * 2:
        t0 = time.perf_counter()
        result = rt.update(kp, q, kp.stamp)
        samples.append(time.perf_counter() - t0)
        if result is not None:
            q = result.q
    ms = np.asarray(samples) * 1e3
    return {"clip": clip, "frames": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def bench_end_to_end(clip: str = "punch", repeat: int = 3) -> dict:
    """capture -> policy -> control with all three nodes in one `lam mimic` process: latency from
    frame capture to command publish and to the command's first application by control_node."""
    out = subprocess.run([sys.executable, "-m", "lam_control.cli", "mimic", "--source", f"mocap:{clip}",
                          "--repeat", str(repeat), "--json"], capture_output=True, text=True, timeout=300)
    text = out.stdout
    if "{" not in text:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    summary = json.loads(text[text.index("{"):])
    keys = ("command_latency_p50_ms", "command_latency_p95_ms", "capture_to_apply_p50_ms", "capture_to_apply_p95_ms",
            "tracking_error_mean_mm", "time_aligned_error_mean_mm", "joint_limit_violations")
    return {"clip": clip, **{k: summary.get(k) for k in keys}}


def run_teleop_benchmarks() -> dict:
    return {"ik_warm_lam_arm": bench_ik(RobotConfig()), "ik_warm_panda": bench_ik(panda()),
            "retarget_per_frame": bench_retarget(), "teleop_end_to_end": bench_end_to_end()}
