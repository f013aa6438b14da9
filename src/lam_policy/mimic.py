"""Motion imitation metrics: how well the arm reproduced the operator's motion.

Pure: takes what a run recorded (capture frame log, joint states, command stamps) and the clean
clip, and reports TCP tracking error against the scaled operator grip path (as path deviation:
the distance to the nearest point of the path shown in the last 0.5 s; and time-aligned, where
every millisecond of lag counts), limit violations, peak joint speed, jerk and command latency.
"""
from __future__ import annotations

import numpy as np

from lam_capture.perturb import PerturbConfig
from lam_capture.skeleton import Keypoints
from lam_control.robot import RobotConfig
from lam_policy.motion_data import captured
from lam_policy.retarget import RetargetConfig, Retargeter


def reference_path(robot: RobotConfig, config: RetargetConfig, clean: list[Keypoints], mode: str = "retarget"):
    """The scaled operator grip path over the clean clip, (F, 3) robot-frame targets (NaN where
    the driving arm is not tracked), and a configuration (n_cmd,) whose TCP is on the target of
    the first frame the policy will command (where the arm should start, so the run measures
    imitation, not the approach), and that frame's index (the measurement starts when it is shown:
    before it the policy has not commanded anything).

    The scale is calibrated from the clip's first published frames as live retargeting does,
    then every frame maps, the calibration frames included: a looped clip is measured over all of
    it. The first commanded frame is the capture cleaner's first published frame (it publishes
    after ``stable_frames`` consistent ones), plus, in ``retarget`` mode, the retargeter's
    calibration frames.
    """
    published = captured(clean, PerturbConfig())  # what capture_node publishes of the clean clip
    rt = Retargeter(robot, config)
    if not rt.calibrate_from(published):
        raise ValueError("the clip never shows the driving arm: nothing to imitate")
    q = robot.home_positions()
    targets = np.full((len(clean), 3), np.nan)
    for i, kp in enumerate(clean):
        result = rt.update(kp, q, kp.stamp)
        if result is not None:
            targets[i] = rt.within_reach(result.absolute_target)
    tracked = np.isfinite(targets[:, 0])
    first = int(np.searchsorted([kp.stamp for kp in clean], published[0].stamp - 1e-9))
    candidates = np.flatnonzero(tracked[first:]) + first
    skip = config.calibration_frames - 1 if mode == "retarget" and config.scale <= 0 else 0
    start_frame = candidates[min(skip, len(candidates) - 1)] if candidates.size else np.flatnonzero(tracked)[0]
    start = rt.ik.solve(targets[start_frame], None, rt.full(q), None).q[: rt.n_cmd]
    return targets, start, int(start_frame)


def tcp_path(robot: RobotConfig, states: list, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(T,) receipt times and (T, 3) TCP positions from recorded joint states."""
    model = robot.load_model()
    idx = [states[0][1].index(n) for n in names]
    pad = np.zeros(len(model.joint_names) - len(names))
    ee = model.link_index[robot.ee_link]
    times = np.array([t for t, _, _ in states])
    tcp = np.array([model.forward(np.concatenate([q[idx], pad]))[ee, :3, 3] for _, _, q in states])
    return times, tcp


def first_shown(frame_log: list, frame: int | None) -> float | None:
    """Capture time (s) at which the clip's ``frame`` is first on show (None: not shown or None)."""
    shown = [t for i, t in frame_log if i == frame] if frame is not None else []
    return float(shown[0]) if shown else None


def tracking_error(frame_log: list, targets: np.ndarray, times: np.ndarray, tcp: np.ndarray,
                   window: float = 0.0, begin: float | None = None) -> np.ndarray:
    """Distance (m) from the TCP at each state time to the operator path, from ``begin`` (s; the
    first frame on show when None) to 0.1 s after the last frame.

    ``window`` 0: to the target of the frame on show at that instant (time-aligned: latency and
    lag count as error). ``window`` > 0: to the nearest point of the path shown during the last
    ``window`` seconds (path deviation: how far the arm strays from the path, lag aside).
    """
    log = np.array(frame_log, dtype=float)  # (K, 2): clip index, capture time
    ref_t, ref_p = log[:, 1], targets[log[:, 0].astype(int)]
    begin = ref_t[0] if begin is None else max(begin, ref_t[0])
    errors = []
    for t, p in zip(times, tcp):
        if t < begin or t > ref_t[-1] + 0.1:
            continue
        hi = int(np.searchsorted(ref_t, t, side="right"))
        lo = int(np.searchsorted(ref_t, t - window, side="left")) if window > 0 else hi - 1
        seg = ref_p[max(lo, 0):hi]
        seg = seg[np.isfinite(seg[:, 0])]
        if len(seg):
            errors.append(np.linalg.norm(seg - p, axis=1).min())
    return np.asarray(errors)


def jerk_rms(times: np.ndarray, tcp: np.ndarray, rate: float = 100.0) -> float:
    """RMS TCP jerk (m/s^3) after resampling the path at ``rate`` Hz."""
    if len(times) < 8:
        return float("nan")
    grid = np.arange(times[0], times[-1], 1.0 / rate)
    path = np.stack([np.interp(grid, times, tcp[:, a]) for a in range(3)], axis=1)
    jerk = np.diff(path, 3, axis=0) * rate**3
    return float(np.sqrt(np.mean(np.sum(jerk**2, axis=1))))


def summarize(robot: RobotConfig, frame_log, targets, states, applied, commands, names,
              dt: float = 0.01, start_frame: int | None = None) -> dict:
    """All figures of one imitation run (see the module docstring); tracking is measured from
    when the clip's ``start_frame`` (reference_path's) is first shown."""
    model = robot.load_model()
    times, tcp = tcp_path(robot, states, names)
    begin = first_shown(frame_log, start_frame)
    err = tracking_error(frame_log, targets, times, tcp, window=0.5, begin=begin)
    aligned = tracking_error(frame_log, targets, times, tcp, begin=begin)
    idx = [states[0][1].index(n) for n in names]
    q = np.array([s[2][idx] for s in states])
    n = len(names)
    lower, upper = model.lower[:n], model.upper[:n]
    # Commands must never leave the limits; measured states may by physics' own tolerance.
    sent = np.array([a[2][[a[1].index(j) for j in names]] for a in applied]) if applied else np.zeros((0, n))
    command_violations = int(np.sum((sent < lower - 1e-9) | (sent > upper + 1e-9)))
    state_out = (q < lower - 1e-3) | (q > upper + 1e-3)
    state_violations = int(np.sum(state_out))
    excess = np.maximum(lower - q, q - upper)  # > 0: beyond a limit
    # Commanded joint speed per control tick (receipt times jitter; the tick period does not).
    step = np.abs(np.diff(sent, axis=0)) / dt if len(sent) > 1 else np.zeros((0, n))
    speed_fraction = float((step / model.velocity[:n]).max()) if len(step) else float("nan")
    lat = np.array([(recv - stamp) * 1e-9 for _, recv, stamp in commands if stamp > 0])
    pct = lambda a, p: round(float(np.percentile(a, p)) * 1e3, 2) if a.size else None  # noqa: E731
    return {
        "frames": len(frame_log), "joint_states": len(states), "commands": len(commands),
        "tracking_error_mean_mm": round(float(err.mean()) * 1e3, 2) if err.size else None,
        "tracking_error_p95_mm": pct(err, 95),
        "time_aligned_error_mean_mm": round(float(aligned.mean()) * 1e3, 2) if aligned.size else None,
        "time_aligned_error_p95_mm": pct(aligned, 95),
        "joint_limit_violations": command_violations + state_violations,
        "command_limit_violations": command_violations, "state_limit_violations": state_violations,
        # where measured states left the limits: joint -> [samples, worst excess (rad or m)]
        "state_limit_violations_by_joint": {names[j]: [int(state_out[:, j].sum()), round(float(excess[:, j].max()), 4)]
                                            for j in range(n) if state_out[:, j].any()},
        "peak_commanded_speed_fraction_of_limit": round(speed_fraction, 3),
        "tcp_jerk_rms_m_s3": round(jerk_rms(times, tcp), 2),
        "command_latency_p50_ms": pct(lat, 50), "command_latency_p95_ms": pct(lat, 95),
    }
