"""lam mimic's reference: the scaled operator path over every frame of the clip, the arm's start
on the first frame the policy commands, and the measurement window (lam_policy.mimic)."""
from __future__ import annotations

import numpy as np
import pytest

from lam_capture.mocap import MocapSource
from lam_capture.perturb import PerturbConfig
from lam_control.robot import RobotConfig
from lam_policy.mimic import first_shown, reference_path, tracking_error
from lam_policy.motion_data import captured, looped
from lam_policy.retarget import RetargetConfig, Retargeter

ROBOT = RobotConfig()


@pytest.fixture(scope="module")
def walk():
    return MocapSource("walk").all_keypoints()


def tcp_of(q: np.ndarray) -> np.ndarray:
    model = ROBOT.load_model()
    full = np.concatenate([q, np.zeros(len(model.joint_names) - len(q))])
    return model.forward(full)[model.link_index[ROBOT.ee_link], :3, 3]


def test_reference_maps_every_frame_calibration_frames_included(walk):
    # The clip is looped: frames 0-9 come back after calibration and must be measured too.
    targets, _, _ = reference_path(ROBOT, RetargetConfig(), walk)
    assert targets.shape == (len(walk), 3) and np.all(np.isfinite(targets))
    live = Retargeter(ROBOT, RetargetConfig())
    q = ROBOT.home_positions()
    mapped = {}
    for i, kp in enumerate(looped(walk, 2)):
        result = live.update(kp, q, kp.stamp)
        if result is not None and i >= len(walk):
            mapped[i - len(walk)] = live.within_reach(result.absolute_target)
    assert set(range(10)) <= set(mapped)  # the second loop's calibration frames
    for i, point in mapped.items():
        assert np.linalg.norm(point - targets[i]) < 1e-6


@pytest.mark.parametrize("mode", ["retarget", "lam"])
def test_the_arm_starts_on_the_first_frame_the_policy_commands(walk, mode):
    targets, q_start, start_frame = reference_path(ROBOT, RetargetConfig(), walk, mode)
    published = captured(walk, PerturbConfig())
    stamps = [kp.stamp for kp in walk]
    first_published = stamps.index(published[0].stamp)
    assert first_published > 0  # the cleaner waits for consistent frames before publishing
    assert np.linalg.norm(tcp_of(q_start) - targets[start_frame]) < 0.005
    if mode == "lam":
        assert start_frame == first_published
        return
    live = Retargeter(ROBOT, RetargetConfig())
    for kp in published:
        result = live.update(kp, q_start, kp.stamp)
        if result is not None:
            break
    assert stamps.index(kp.stamp) == start_frame
    # Re-anchoring is a no-op: the first command is where the arm already is.
    assert np.linalg.norm(result.target_position - result.absolute_target) < 1e-6
    assert np.linalg.norm(tcp_of(q_start) - result.target_position) < 0.005


def test_tracking_error_is_measured_from_begin():
    targets = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    log = [(0, 0.0), (1, 0.1), (2, 0.2)]
    times = np.array([0.0, 0.1, 0.2])
    tcp = np.array([[0.0, 5.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # off the path only at t=0
    assert tracking_error(log, targets, times, tcp).max() == pytest.approx(5.0)
    begin = first_shown(log, 1)
    assert begin == pytest.approx(0.1)
    assert tracking_error(log, targets, times, tcp, begin=begin).max() == pytest.approx(0.0)
    assert first_shown(log, 7) is None and first_shown(log, None) is None


def test_summary_counts_limit_violations_and_names_the_joint():
    from lam_policy.mimic import summarize

    names = ROBOT.command_joints
    model = ROBOT.load_model()
    upper = model.upper[:len(names)]
    home = np.asarray(ROBOT.home_positions(), dtype=float)[:len(names)]
    over = home.copy()
    over[3] = upper[3] + 0.01  # the elbow measured 10 mrad past its limit
    states = [(0.01 * i, names, over if i in (4, 5) else home) for i in range(10)]
    applied = [(0.01 * i, names, home) for i in range(10)]
    log = [(i, 0.01 * i) for i in range(10)]
    targets = np.tile(tcp_of(home), (10, 1))
    summary = summarize(ROBOT, log, targets, states, applied, [], names)
    assert summary["command_limit_violations"] == 0 and summary["state_limit_violations"] == 2
    assert summary["joint_limit_violations"] == 2
    count, worst = summary["state_limit_violations_by_joint"][names[3]]
    assert count == 2 and worst == pytest.approx(0.01, abs=1e-4)
    assert list(summary["state_limit_violations_by_joint"]) == [names[3]]
    clean = summarize(ROBOT, log, targets, [(t, n, home) for t, n, _ in states], applied, [], names)
    assert clean["joint_limit_violations"] == 0 and clean["state_limit_violations_by_joint"] == {}
