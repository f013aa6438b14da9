"""DAgger for motion imitation (lam_policy.motion_dagger, `lam dataset mimic --dagger`): labels
from the teacher at the policy's own tick times, refusals, and that a second round trained on the
states reached by a policy are those states, not the teacher's. Real mocap clips, the real sim
arm and a real (briefly trained) checkpoint; nothing mocked. Whether a DAgger round helps is a
full-recipe measurement (README, Motion imitation), not a CI-sized one: on two clips and 1500-4000
steps the second round was within +-10% of the first."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from lam_capture.perturb import PerturbConfig
from lam_control.robot import RobotConfig
from lam_policy.frames import ACTION, EPISODE, KEYPOINTS, STATE, load_npz_frames
from lam_policy.motion_dagger import build_dagger_frames, dagger_episode
from lam_policy.motion_data import MimicDataConfig, build_mimic_frames, sample

log = logging.getLogger(__name__)
ROBOT = RobotConfig()
N_CMD = len(ROBOT.command_joints)


def _teacher(duration: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    times = np.linspace(0.0, duration, 61)
    q = np.stack([np.sin(times + j) * 0.3 for j in range(N_CMD)], axis=1)
    return times, q


def _record(ticks) -> list:
    rng = np.random.default_rng(0)
    return [(float(t), {STATE: rng.normal(0, 0.1, N_CMD), KEYPOINTS: rng.normal(0, 1, 300)}) for t in ticks]


def test_dagger_labels_are_the_teacher_at_each_tick_plus_the_lead():
    teacher = _teacher()
    config = MimicDataConfig(state_noise=0.0, state_drift=0.0)
    ticks = np.arange(0.1, 2.5, 1 / 30)  # runs past the teacher's end (2 s)
    record = _record(ticks)
    arrays = dagger_episode(record, teacher, ROBOT, config, np.random.default_rng(1))
    kept = ticks[ticks <= 2.0]
    assert len(arrays[ACTION]) == len(kept)
    np.testing.assert_allclose(arrays[ACTION], sample(*teacher, kept + config.action_lead), atol=1e-6)
    # without state noise the observations are the recorded ones, unchanged
    np.testing.assert_allclose(arrays[STATE], np.stack([o[STATE] for _, o in record[:len(kept)]]), atol=1e-6)
    np.testing.assert_allclose(arrays[KEYPOINTS], np.stack([o[KEYPOINTS] for _, o in record[:len(kept)]]),
                               atol=1e-6)


def test_dagger_state_gets_motion_data_drift_on_the_arm_joints_only():
    arrays = dagger_episode(_record(np.arange(0, 2, 1 / 30)), _teacher(), ROBOT, MimicDataConfig(),
                            np.random.default_rng(1))
    plain = dagger_episode(_record(np.arange(0, 2, 1 / 30)), _teacher(), ROBOT,
                           MimicDataConfig(state_noise=0.0, state_drift=0.0), np.random.default_rng(1))
    n_arm = len(ROBOT.joint_names)
    shift = arrays[STATE] - plain[STATE]
    assert 0.005 < np.abs(shift[:, :n_arm]).mean() < 0.1
    assert np.all(shift[:, n_arm:] == 0)


def test_dagger_episode_empty_or_mismatched():
    teacher = _teacher()
    assert dagger_episode([], teacher, ROBOT, MimicDataConfig(), np.random.default_rng(0)) is None
    assert dagger_episode(_record([3.0, 3.1]), teacher, ROBOT, MimicDataConfig(), np.random.default_rng(0)) is None
    bad = [(0.1, {STATE: np.zeros(4), KEYPOINTS: np.zeros(300)})]
    with pytest.raises(ValueError, match="4 joints"):
        dagger_episode(bad, teacher, ROBOT, MimicDataConfig(), np.random.default_rng(0))


def _train(frames, out, steps: int):
    from lam_policy.mlp import MLPConfig
    from lam_policy.policy_base import load_policy
    from lam_policy.train import TrainConfig, train

    policy_config = MLPConfig(observation_keys=(STATE, KEYPOINTS), history=4, chunk=10, hidden_dims=(256, 256),
                              relative_actions=False, device="cpu")
    train(frames, out, TrainConfig(policy="mlp", policy_config=policy_config, steps=steps, batch_size=64, lr=1e-3,
                                   warmup_steps=20, val_every=0, checkpoint_every=0, device="cpu"),
          progress=False)
    return load_policy(out, ROBOT.command_joints, "cpu")


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A briefly trained motion-imitation MLP on one loop of walk (what the refusal and CLI tests
    need is a real checkpoint, not a good one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frames, _ = build_mimic_frames(MimicDataConfig(clips=["walk"], speeds=[1.0], variants=2, loops=1))
        out = tmp_path_factory.mktemp("dagger") / "tiny"
        return out, _train(frames, out, steps=50)
    finally:
        torch.set_num_threads(threads)


def test_build_dagger_frames_runs_the_policy_and_refuses_what_it_cannot_use(tiny_policy):
    _, policy = tiny_policy
    frames, report = build_dagger_frames(policy, MimicDataConfig(clips=["walk"], speeds=[1.0], variants=2, loops=1))
    assert report["episodes"] == 2 and len(frames.episode_ids()) == 2
    assert set(frames.data) == {STATE, KEYPOINTS, ACTION, EPISODE}
    assert all(np.isfinite(frames.data[k]).all() for k in (STATE, KEYPOINTS, ACTION))
    lower, upper = ROBOT.load_model().lower[:N_CMD], ROBOT.load_model().upper[:N_CMD]
    assert np.all(frames.data[ACTION] >= lower - 1e-6) and np.all(frames.data[ACTION] <= upper + 1e-6)
    assert all(e["tracking_error_mean_mm"] > 0 for e in report["per_episode"])
    # the states are where this (barely trained) policy led the arm, not the teacher-following ones
    follow, _ = build_mimic_frames(MimicDataConfig(clips=["walk"], speeds=[1.0], variants=1, loops=1,
                                                   state_noise=0.0, state_drift=0.0))
    ours = frames.data[STATE][frames.data[EPISODE] == 0]
    n = min(len(ours), len(follow))
    off = np.abs(ours[:n, :7] - follow.data[STATE][:n, :7]).max(axis=1)
    assert np.median(off) > 0.05  # rad

    class Wrong:
        def __init__(self, **kw):
            self.__dict__.update(config=policy.config, joint_names=policy.joint_names, fps=policy.fps)
            self.__dict__.update(kw)

    from types import SimpleNamespace
    with pytest.raises(ValueError, match="motion-imitation policy"):
        build_dagger_frames(Wrong(config=SimpleNamespace(observation_keys=(STATE,))), MimicDataConfig(clips=["walk"]))
    with pytest.raises(ValueError, match="not the robot's"):
        build_dagger_frames(Wrong(joint_names=["a", "b"]), MimicDataConfig(clips=["walk"]))
    with pytest.raises(ValueError, match="15 Hz"):
        build_dagger_frames(Wrong(fps=15.0), MimicDataConfig(clips=["walk"]))


def test_lam_dataset_mimic_dagger_writes_frames_and_refuses_a_task_checkpoint(tiny_policy, tmp_path, capsys):
    from lam_control.cli import main

    ckpt, _ = tiny_policy
    out = tmp_path / "dagger.npz"
    assert main(["dataset", "mimic", "--dagger", str(ckpt), "--clips", "walk", "--variants", "2", "--speeds", "1.0",
                 "--loops", "1", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 2
    data, meta = load_npz_frames(out)
    assert len(data[ACTION]) == report["frames"] and meta["joint_names"] == ROBOT.command_joints
    assert main(["dataset", "mimic", "--dagger", str(tmp_path / "missing"), "--clips", "walk",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err
