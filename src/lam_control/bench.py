"""`lam bench`: speed figures of the control side (more sections arrive with later issues)."""
from __future__ import annotations

import time

import numpy as np

from lam_capture.bench import run_capture_benchmarks
from lam_control.bench_recorder import run_recorder_benchmarks
from lam_policy.bench import run_teleop_benchmarks
from lam_control.robot import RobotConfig, panda
from lam_control.safety import SafetyConfig, SafetyFilter
from lam_control.sim_arm import SimArm


def _percentiles(samples: list[float], scale: float = 1e3) -> dict:
    a = np.asarray(samples) * scale
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p95_ms": round(float(np.percentile(a, 95)), 4),
            "p99_ms": round(float(np.percentile(a, 99)), 4)}


def bench_filter(robot: RobotConfig, steps: int = 2000, seed: int = 0) -> dict:
    """Safety filter time per tick on a random walk of targets (the control loop's hot path)."""
    model = robot.load_model()
    n = len(robot.command_joints)
    filt = SafetyFilter(model, n, SafetyConfig(max_cartesian_speed=1.0), robot.home_positions(), robot.ee_link)
    rng = np.random.default_rng(seed)
    target = robot.home_positions()
    samples = []
    for k in range(steps):
        if k % 50 == 0:
            target = rng.uniform(model.lower[:n], model.upper[:n])
        now = k * filt.dt
        filt.accept_command(target[None], now)
        t0 = time.perf_counter()
        filt.step(target, now)
        samples.append(time.perf_counter() - t0)
    return _percentiles(samples)


def bench_sim_tick(steps: int = 1000) -> dict:
    """SimArm.tick at 100 Hz: filter + motor targets + 2-3 physics steps at 240 Hz."""
    arm = SimArm(RobotConfig(), SafetyConfig(max_cartesian_speed=1.0, command_timeout=0))
    try:
        target = arm.robot.home_positions() + 0.3
        arm.send(target, 0.0)
        samples = []
        for k in range(1, steps):
            t0 = time.perf_counter()
            arm.tick(k * 0.01)
            samples.append(time.perf_counter() - t0)
    finally:
        arm.close()
    return _percentiles(samples)


def bench_control_node(seconds: float) -> dict:
    """control_node under rclpy at its configured 100 Hz: timer period and work per tick."""
    from lam_control.control_node import ControlNode
    from lam_control.resources import share_file
    from lam_control.ros_graph import Graph

    with Graph([share_file("config/control.yaml")], private=True) as graph:
        node = graph.add(ControlNode)
        graph.spin(duration=seconds)
        periods, work = list(node._periods), list(node._work)
    out = {"ticks": len(periods), "rate_hz": round(len(periods) / max(sum(periods), 1e-9), 2)}
    out.update({f"period_{k}": v for k, v in _percentiles(periods).items()})
    out.update({f"tick_{k}": v for k, v in _percentiles(work).items()})
    return out


def run_benchmarks(seconds: float = 5.0) -> dict:
    return {
        "safety_filter_lam_arm": bench_filter(RobotConfig()),
        "safety_filter_panda": bench_filter(panda()),
        "sim_arm_tick_100hz": bench_sim_tick(),
        "control_node_loop": bench_control_node(seconds),
        **run_capture_benchmarks(),
        **run_teleop_benchmarks(),
        **run_recorder_benchmarks(seconds),
        **run_policy_benchmarks(),
    }


def run_policy_benchmarks() -> dict:
    """LAM inference latency (one torch thread, as policy_node runs it; and CUDA when present)
    and training throughput."""
    import torch

    from lam_policy.bench_act import bench_policy

    out = {"policy_cpu": bench_policy(device="cpu", threads=1)}
    if torch.cuda.is_available():
        out["policy_cuda"] = bench_policy(device="cuda")
    return out
