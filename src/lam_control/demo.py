"""The demo's pieces that need no ROS: a recorded-style motion, a run summary, and the video."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lam_control.robot import RobotConfig

log = logging.getLogger(__name__)

# Keyframes for the project's arm (7 arm joints in rad, then finger opening in m), with the
# seconds to reach each: a pick-and-place as an operator would demonstrate it.
LAM_ARM_KEYFRAMES = [
    ([0.0, 0.5, 0.0, 1.5, 0.0, 1.1, 0.0], 0.035, 0.0),     # home
    ([0.35, 1.3, 0.0, 1.4, 0.0, 0.44, 0.0], 0.035, 2.0),  # reach down to the table
    ([0.35, 1.3, 0.0, 1.4, 0.0, 0.44, 0.0], 0.005, 0.8),  # close the gripper
    ([0.35, 0.6, 0.0, 1.5, 0.0, 1.04, 0.0], 0.005, 1.5),   # lift
    ([-0.45, 0.6, 0.0, 1.5, 0.0, 1.04, 0.0], 0.005, 2.0),  # carry across
    ([-0.45, 1.25, 0.0, 1.4, 0.0, 0.49, 0.0], 0.005, 1.5),  # lower
    ([-0.45, 1.25, 0.0, 1.4, 0.0, 0.49, 0.0], 0.035, 0.8),  # release
    ([0.0, 0.5, 0.0, 1.5, 0.0, 1.1, 0.0], 0.035, 2.0),     # home
]


def _min_jerk(s: np.ndarray) -> np.ndarray:
    return 10 * s**3 - 15 * s**4 + 6 * s**5


def demo_trajectory(robot: RobotConfig, rate: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """A recorded-style trajectory over robot.command_joints: times (N,), positions (N, J).

    The project's arm does a pick-and-place; any other robot waves each joint around its home.
    """
    n_grip = len(robot.gripper_joints)
    if robot.joint_names == RobotConfig().joint_names:
        keys = [(np.array(q + [g] * n_grip), dt) for q, g, dt in LAM_ARM_KEYFRAMES]
    else:
        home = robot.home_positions()
        wave = np.zeros_like(home)
        wave[: len(robot.joint_names)] = 0.3 * np.resize([1, -1], len(robot.joint_names))
        keys = [(home, 0.0), (home + wave, 2.0), (home - wave, 3.0), (home, 2.0)]
    times, points, t0 = [0.0], [keys[0][0]], 0.0
    for (a, _), (b, dt) in zip(keys[:-1], keys[1:]):
        steps = max(1, int(round(dt * rate)))
        s = _min_jerk(np.arange(1, steps + 1) / steps)
        for k, w in enumerate(s):
            times.append(t0 + (k + 1) / rate)
            points.append(a + w * (b - a))
        t0 += steps / rate
    return np.array(times), np.stack(points)


def summarize(model, lower: np.ndarray, upper: np.ndarray, vcap: np.ndarray,
              states: list, applied: list, joint_names: list[str], target_final: np.ndarray,
              dt: float) -> dict:
    """Figures of a run from the recorded /joint_states and /lam/applied_command."""
    def matrix(log_):
        idx = [log_[0][1].index(n) for n in joint_names] if log_ else []
        return np.array([t for t, _, _ in log_]), np.array([q[idx] for _, _, q in log_])

    ts, qs = matrix(states)
    _, qa = matrix(applied)
    out = {"joint_state_messages": len(states), "applied_commands": len(applied)}
    if len(qa):
        out["applied_nonfinite"] = int(np.sum(~np.isfinite(qa)))
        out["applied_limit_violations"] = int(np.sum((qa < lower - 1e-9) | (qa > upper + 1e-9)))
        step = np.abs(np.diff(qa, axis=0))  # per control tick
        out["peak_speed_fraction_of_cap"] = float(np.max(step / (vcap * dt)))
    if len(qs):
        out["state_limit_violations"] = int(np.sum((qs < model.lower[: qs.shape[1]] - 1e-3)
                                                   | (qs > model.upper[: qs.shape[1]] + 1e-3)))
        out["final_error_rad"] = float(np.max(np.abs(qs[-1] - target_final)))
        out["duration_s"] = float(ts[-1] - ts[0])
    return out


def write_video(robot: RobotConfig, times: np.ndarray, positions: np.ndarray, path: Path,
                fps: int = 20, size: tuple[int, int] = (480, 360)) -> int:
    """Render joint positions (N, J) at ``times`` into an mp4 with PyBullet's software renderer.

    Returns the number of frames written.
    """
    import imageio.v2 as imageio

    from lam_control.sim_arm import SimArm

    path.parent.mkdir(parents=True, exist_ok=True)
    arm = SimArm(robot)
    frames = 0
    try:
        with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=7,
                                macro_block_size=8) as writer:
            for t in np.arange(times[0], times[-1], 1.0 / fps):
                k = min(int(np.searchsorted(times, t)), len(times) - 1)
                arm.reset_positions(positions[k])
                writer.append_data(arm.render(*size))
                frames += 1
    finally:
        arm.close()
    log.info("wrote %d frames to %s", frames, path)
    return frames
