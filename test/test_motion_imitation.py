"""Motion imitation: the offline retargeting teacher, the training frames built from it, `lam mimic
--mode lam`'s checkpoint check, and a small learned model against live retargeting under noise.

All on real motion capture (pybullet_data's DeepMimic clips). Measured on this checkout: the
teacher's plan streamed to the sim arm through the safety filter follows the operator's path
(lam mimic's path deviation) at ~31 mm on walk, 75 on punch, 57 on kick and 95 on dance_a, where
live retargeting gets 50-90, 90-240, 95-120 and 280-340 mm; its TCP jerk is ~5-8x lower.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from lam_capture.mocap import MocapSource
from lam_capture.perturb import PerturbConfig
from lam_control.robot import RobotConfig
from lam_policy.frames import ACTION, EPISODE, KEYPOINTS, STATE, Frames, load_npz_frames, save_frames_npz
from lam_policy.mimic import jerk_rms, reference_path, tracking_error
from lam_policy.frames import flatten_keypoints
from lam_policy.motion_data import MimicDataConfig, build_mimic_frames, clip_frames, looped
from lam_policy.motion_teacher import TeacherConfig, joint_bounds, operator_path, teacher_trajectory
from lam_policy.retarget import RetargetConfig, Retargeter

log = logging.getLogger(__name__)
ROBOT = RobotConfig()
STEPS = 1500  # learning test: ~10 s of MLP training on one core


@pytest.fixture(scope="module")
def clean():
    return {name: MocapSource(name).all_keypoints() for name in ("walk", "punch")}


@pytest.fixture(scope="module")
def taught(clean):
    """The teacher on two loops of punch: (stream, times, q)."""
    stream = looped(clean["punch"], 2)
    times, q = teacher_trajectory(ROBOT, stream)
    return stream, times, q


def tcp_of(q: np.ndarray) -> np.ndarray:
    """(F, 3) TCP positions of command-joint configurations (F, n_cmd)."""
    model = ROBOT.load_model()
    pad = np.zeros(len(model.joint_names) - q.shape[1])
    ee = model.link_index[ROBOT.ee_link]
    return np.array([model.forward(np.concatenate([row, pad]))[ee, :3, 3] for row in q])


def live_retargeting(stream) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame retargeting with the arm perfectly at each command (no filter): (F, n_cmd), and
    per frame whether the IK put the TCP within 1 cm of the operator's target (F,)."""
    rt = Retargeter(ROBOT, RetargetConfig(joint_speed_scale=0.0))  # no trust region: reach if reachable
    q = ROBOT.home_positions()
    out, reached = [], []
    for kp in stream:
        result = rt.update(kp, q, kp.stamp)
        q = result.q if result is not None else q
        out.append(q)
        reached.append(result is not None and result.position_error < 0.01)
    return np.array(out), np.array(reached)


def test_teacher_stays_inside_the_safety_filter_limits(taught):
    _, times, q = taught
    config = TeacherConfig()
    lower, upper, vmax = joint_bounds(ROBOT, config)
    assert q.shape == (len(times), len(ROBOT.command_joints)) and np.all(np.isfinite(q))
    assert np.all(q >= lower - 1e-9) and np.all(q <= upper + 1e-9)
    speed = np.abs(np.diff(q, axis=0)) / np.diff(times)[:, None]
    assert np.all(speed <= vmax + 1e-6), (speed / vmax).max()
    accel = np.abs(np.diff(speed, axis=0)) / np.diff(times)[1:, None]
    assert np.all(accel <= vmax / config.accel_time + 1e-3)
    tcp = tcp_of(q)
    step = np.linalg.norm(np.diff(tcp, axis=0), axis=1) / np.diff(times)
    # The sim's Cartesian cap holds for the planned waypoints; joint-space smoothing between them
    # can exceed it slightly (measured 1.08x), which the filter's own cap then absorbs.
    assert step.max() <= 1.15 * config.max_cartesian_speed


def test_teacher_is_smoother_than_live_retargeting_and_closer_to_the_operator_path(taught, clean):
    stream, times, q = taught
    live, _ = live_retargeting(stream)
    targets, _, _ = reference_path(ROBOT, RetargetConfig(), clean["punch"])
    log_frames = [(i % len(clean["punch"]), kp.stamp) for i, kp in enumerate(stream)]
    # Live retargeting through the arm's caps is what lam mimic measures; here the live commands
    # are scored as sent (no caps), the teacher as planned (within the caps): an upper bound for live.
    teacher_tcp, live_tcp = tcp_of(q), tcp_of(live)
    jerk_teacher, jerk_live = jerk_rms(times, teacher_tcp), jerk_rms(times, live_tcp)
    log.info("TCP jerk: teacher %.0f, live retargeting %.0f m/s^3", jerk_teacher, jerk_live)
    assert jerk_teacher < 0.3 * jerk_live  # measured 0.13
    err = tracking_error(log_frames, targets, times, teacher_tcp, window=0.5)
    log.info("teacher path deviation on punch: %.1f mm", err.mean() * 1e3)
    assert err.mean() < 0.08  # measured ~66 mm (the arm is 4x slower than the punch)


def test_teacher_stays_on_a_slow_motion_s_path_where_it_is_reachable(clean):
    """At half speed the arm can keep up: the plan may run late (within lam mimic's 0.5 s window,
    by design) but stays on the operator's path wherever IK can reach it."""
    stream = looped(clip_frames("walk", 0.5), 2)
    times, q = teacher_trajectory(ROBOT, stream)
    _, reached = live_retargeting(stream)
    targets = operator_path(ROBOT, RetargetConfig(), stream).targets  # every frame's, both loops
    tcp, log_frames = tcp_of(q), [(i, kp.stamp) for i, kp in enumerate(stream)]
    err = np.array([tracking_error(log_frames, targets, times[i:i + 1], tcp[i:i + 1], window=0.5)[0]
                    for i in np.flatnonzero(reached)])
    assert reached.mean() > 0.8
    log.info("slow walk, reachable frames (%.0f%%): teacher path deviation mean %.1f mm, p95 %.1f mm",
             reached.mean() * 100, err.mean() * 1e3, np.percentile(err, 95) * 1e3)
    assert err.mean() < 0.015 and np.percentile(err, 95) < 0.03


@pytest.mark.parametrize("field,value", [("cutoff", 0.0), ("velocity_scale", 1.5), ("headroom", 0.0),
                                         ("gripper", "squeeze"), ("path_window", -1.0), ("ik_iterations", 0),
                                         ("workspace_min", [0.0, 0.0, 2.0]), ("move_cost", None)])
def test_teacher_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"TeacherConfig.{field.split('_min')[0]}"):
        TeacherConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("variants", 0), ("speeds", [0.0]), ("noise", (0.02, 0.01)),
                                         ("dropout", (0.0, 1.5)), ("clips", []), ("fps", None)])
def test_mimic_data_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"MimicDataConfig.{field}"):
        MimicDataConfig(**{field: value})


@pytest.fixture(scope="module")
def mimic_frames():
    config = MimicDataConfig(clips=["walk", "punch"], speeds=[1.0], variants=3, loops=2, seed=3)
    return build_mimic_frames(config)


def test_mimic_frames_have_one_episode_per_run_and_the_runtime_layout(mimic_frames, clean):
    frames, report = mimic_frames
    n = len(frames)
    assert report["episodes"] == 6 and len(frames.episode_ids()) == 6
    assert frames.data[STATE].shape == (n, 9) and frames.data[ACTION].shape == (n, 9)
    assert frames.data[KEYPOINTS].shape == (n, 300) and frames.joint_names == ROBOT.command_joints
    assert all(np.all(np.isfinite(frames.data[k])) for k in (STATE, ACTION, KEYPOINTS))
    assert [e["clip"] for e in report["per_episode"]] == ["walk"] * 3 + ["punch"] * 3
    assert report["per_episode"][0]["noise_m"] == 0.0 and report["per_episode"][1]["noise_m"] > 0
    # ~2 loops at 30 Hz per episode, less the cleaner's start-up frames
    for e in report["per_episode"]:
        seconds = 2 * len(clean[e["clip"]]) / 30.0
        assert 0.8 * seconds * 30 <= e["frames"] <= seconds * 30 + 1
    # keypoints are x, y, z, confidence per landmark, as LamRuntime flattens them
    kp = clean["walk"][0]
    flat = flatten_keypoints(kp)
    assert np.array_equal(flat.reshape(75, 4)[:, :3], kp.points) and np.array_equal(flat[3::4], kp.confidence)
    # the unperturbed episode observes the clip's own frames (the cleaner does not smooth clean mocap)
    clip = np.stack([kp.points for kp in clean["walk"]])  # (F, 75, 3)
    episode0 = frames.data[KEYPOINTS][frames.data[EPISODE] == frames.episode_ids()[0]].reshape(-1, 75, 4)
    nearest = np.abs(episode0[:, None, :, :3] - clip[None]).max(axis=(2, 3)).min(axis=1)
    assert nearest.max() < 1e-6 and np.all(episode0[:, :, 3] == 1.0)
    # the state is the action's trajectory, late and noisy, not a copy of it
    gap = np.abs(frames.data[ACTION][:, :7] - frames.data[STATE][:, :7]).mean()
    assert 0.005 < gap < 0.3


def test_mimic_frames_round_trip_through_npz(mimic_frames, tmp_path):
    from lam_policy.learn_cli import frames_from_folders

    frames, _ = mimic_frames
    save_frames_npz(tmp_path / "mimic.npz", frames)
    meta = json.loads((tmp_path / "mimic.json").read_text())
    assert meta == {"joint_names": ROBOT.command_joints, "fps": 30.0}
    data, _ = load_npz_frames(tmp_path / "mimic.npz")
    for key in (STATE, ACTION, KEYPOINTS, EPISODE):
        assert np.array_equal(data[key], frames.data[key])
    loaded, report = frames_from_folders([str(tmp_path / "mimic.npz")], 30.0)  # what lam train --data reads
    assert isinstance(loaded, Frames) and len(loaded) == len(frames) and report["source"] == "npz"


def test_lam_mimic_refuses_a_checkpoint_that_does_not_observe_keypoints(tmp_path, capsys):
    from lam_control.cli import main
    from lam_policy.act import ACTConfig, ACTPolicy

    policy = ACTPolicy(ACTConfig(observation_keys=(STATE,), d_model=16, heads=2, ff_dim=16, chunk=2, device="cpu"),
                       {STATE: 9, ACTION: 9}, ROBOT.command_joints, 30.0)
    policy.save(tmp_path / "state_only")
    assert main(["mimic", "--source", "mocap:walk", "--mode", "lam", "--checkpoint", str(tmp_path / "state_only")]) == 2
    err = capsys.readouterr().err
    assert "does not observe observation.keypoints" in err and "Traceback" not in err
    assert main(["mimic", "--source", "mocap:walk", "--mode", "lam"]) == 2
    assert "--mode lam needs --checkpoint" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_small_learned_model_beats_live_retargeting_under_noise(tmp_path):
    """Trained on punch and walk (6 perturbation draws each), scored in simulated-time lam mimic
    (capture core -> policy -> sim arm behind the safety filter) on perturbation seeds the data
    never used, against live retargeting on the same perturbed keypoints."""
    from lam_policy.mimic_rollout import RolloutConfig, rollout
    from lam_policy.mlp import MLPConfig
    from lam_policy.policy_base import load_policy
    from lam_policy.train import TrainConfig, train

    frames, _ = build_mimic_frames(MimicDataConfig(clips=["punch", "walk"], speeds=[1.0], variants=6, seed=0))
    policy_config = MLPConfig(observation_keys=(STATE, KEYPOINTS), history=4, chunk=10, hidden_dims=(256, 256),
                              relative_actions=False, device="cpu")
    train(frames, tmp_path / "run", TrainConfig(policy="mlp", policy_config=policy_config, steps=STEPS, batch_size=64,
                                                 lr=1e-3, warmup_steps=100, val_every=0, checkpoint_every=0,
                                                 device="cpu"), progress=False)
    policy = load_policy(tmp_path / "run", ROBOT.command_joints, "cpu")
    errors = {"lam": [], "retarget": []}
    for clip in ("punch", "walk"):
        for seed in (9001, 9002):
            perturb = PerturbConfig(noise=0.02, dropout=0.05, occlusion_rate=0.5, seed=seed)
            run = RolloutConfig(clip=clip, perturb=perturb)
            for mode, pol in (("lam", policy), ("retarget", None)):
                result = rollout(run, pol)
                assert result["command_limit_violations"] == 0
                errors[mode].append(result["tracking_error_mean_mm"])
    log.info("path deviation under noise (mm), punch x2 then walk x2: lam %s, live retargeting %s",
             np.round(errors["lam"], 1), np.round(errors["retarget"], 1))
    # measured: lam 93, 87, 36, 35 mm vs live 145, 88, 76, 47 mm (path_lag 0.2; with 0: 159, 99, 54, 49)
    assert np.mean(errors["lam"]) < 0.85 * np.mean(errors["retarget"])


def test_lam_dataset_mimic_writes_frames_lam_train_reads(tmp_path, capsys):
    from lam_control.cli import main

    out = tmp_path / "walk.npz"
    assert main(["dataset", "mimic", "--clips", "walk", "--variants", "2", "--speeds", "1.0", "--loops", "1",
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2 and report["clips"] == ["walk"]
    data, meta = load_npz_frames(out)
    assert len(data[ACTION]) == report["frames"] and meta["joint_names"] == ROBOT.command_joints
    assert main(["dataset", "mimic", "--clips", "no_such_clip", "--out", str(out)]) == 2
    assert "unknown mocap clip" in capsys.readouterr().err
