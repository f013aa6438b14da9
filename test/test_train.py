"""Training core: determinism, resume, torchrun data parallel with gloo, data loading, schedule,
optimizer state without pickle, config validation. Data: the seeded synthetic reach task."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lam_policy.act import ACTConfig, ACTPolicy
from lam_policy.bench_act import REACH_JOINTS, synthetic_reach_frames
from lam_policy.checkpoint import CheckpointError
from lam_policy.frames import EPISODE, OBJECT_POSES, STATE, Frames, load_npz_frames, save_frames_npz, split_episodes
from lam_policy.policy_base import load_policy
from lam_policy.train import ProgressLine, TrainConfig, main_from_args, train
from lam_policy.train_state import EpochSampler, optimizer_from_flat, optimizer_to_flat

REPO = Path(__file__).resolve().parents[1]
SMALL_ACT = dict(observation_keys=[STATE, OBJECT_POSES], d_model=32, heads=2, encoder_layers=1, decoder_layers=1,
                 ff_dim=64, latent_dim=4, vae_layers=1, chunk=6, dropout=0.1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames() -> Frames:
    return synthetic_reach_frames(n_episodes=5, seed=3, length=(20, 30))


def small_config(**overrides) -> TrainConfig:
    base = dict(policy="act", policy_config=dict(SMALL_ACT), steps=12, batch_size=8, lr=1e-3, warmup_steps=3,
                val_fraction=0.2, val_every=4, checkpoint_every=6, log_every=2, seed=7)
    return TrainConfig(**{**base, **overrides})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_policy(path).state_dict()


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def test_training_is_deterministic_with_a_seed(tmp_path, frames):
    # ACT with dropout and the VAE's sampled latent: every random draw comes from the seed.
    first = train(frames, tmp_path / "a", small_config(), progress=False)
    second = train(frames, tmp_path / "b", small_config(), progress=False)
    assert first["steps"] == second["steps"] == 12
    assert first["train_loss"] == second["train_loss"] and first["val_loss"] == second["val_loss"]
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    other = train(frames, tmp_path / "c", small_config(seed=8), progress=False)
    assert other["train_loss"] != first["train_loss"]


def test_resume_continues_to_the_same_weights(tmp_path, frames):
    full = train(frames, tmp_path / "full", small_config(), progress=False)
    part = train(frames, tmp_path / "split", small_config(), progress=False, until=6)
    assert part["steps"] == 6 and not (tmp_path / "split" / "model.safetensors").exists()
    assert (tmp_path / "split" / "last").read_text().strip() == "checkpoints/step_000006"
    rest = train(frames, tmp_path / "split", small_config(), progress=False)
    assert rest["resumed_from"] == 6 and rest["steps"] == 12
    assert rest["val_loss"] == full["val_loss"]
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "split"))
    # Each checkpoint folder is itself a loadable policy plus the pickle-free training state.
    step_dir = tmp_path / "full" / "checkpoints" / "step_000006"
    assert sorted(p.name for p in step_dir.iterdir()) == ["config.json", "model.safetensors", "stats.json",
                                                          "training_state.json", "training_state.safetensors"]
    assert isinstance(load_policy(step_dir, expected_joint_names=REACH_JOINTS), ACTPolicy)


def test_resume_refuses_a_changed_config_or_a_tampered_state(tmp_path, frames):
    train(frames, tmp_path, small_config(), progress=False, until=6)
    with pytest.raises(CheckpointError, match=r"training_state\.json: cannot resume .*\['lr'\]"):
        train(frames, tmp_path, small_config(lr=5e-4), progress=False)
    state = tmp_path / "checkpoints" / "step_000006" / "training_state.safetensors"
    blob = bytearray(state.read_bytes())
    blob[-3] ^= 0xFF
    state.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=r"^training_state\.safetensors: sha256"):
        train(frames, tmp_path, small_config(), progress=False)
    fresh = train(frames, tmp_path, small_config(), progress=False, resume=False)
    assert fresh["resumed_from"] is None and fresh["steps"] == 12


def test_mlp_trains_and_reports(tmp_path, frames, capsys):
    summary = train(frames, tmp_path, small_config(policy="mlp", policy_config={"chunk": 4}), progress=True)
    assert summary["steps"] == 12 and summary["samples_per_s"] > 0 and summary["world_size"] == 1
    assert summary["val_loss"] is not None and np.isfinite(summary["val_loss"])
    assert json.loads((tmp_path / "train_summary.json").read_text())["steps"] == 12
    err = capsys.readouterr().err
    assert "step 12/12" in err and "loss" in err and "samples_s" in err
    assert load_policy(tmp_path).policy_type == "mlp"


def test_split_is_by_episode_and_seeded(frames):
    train_rows, val_rows = split_episodes(frames, 0.4, seed=1)
    ep = frames.data[EPISODE]
    assert set(ep[train_rows]).isdisjoint(ep[val_rows])
    assert len(set(ep[val_rows])) == 2 and len(train_rows) + len(val_rows) == len(frames)
    again = split_episodes(frames, 0.4, seed=1)
    assert np.array_equal(again[1], val_rows)
    assert len(split_episodes(frames, 0.0, seed=1)[1]) == 0


def test_sampler_resumes_mid_epoch_and_covers_every_row():
    rows = np.arange(10, 23)
    sampler = EpochSampler(rows, seed=4)
    first = np.concatenate([sampler.next(5) for _ in range(3)])  # 15 > 13: crosses an epoch
    assert sorted(first[:13]) == list(rows)
    state = sampler.state()
    expected = sampler.next(7)
    other = EpochSampler(rows, seed=4)
    other.load_state(state)
    assert np.array_equal(other.next(7), expected)


def test_lr_schedule_warms_up_then_decays():
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = np.array([config.lr_at(s) for s in range(100)])
    assert np.all(np.diff(lrs[:11]) > 0) and abs(lrs[10] - 1e-3) < 1e-12
    assert np.all(np.diff(lrs[10:]) <= 0) and abs(lrs[-1] - 1e-4) < 1e-12


def test_optimizer_state_round_trips_without_pickle(frames):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    tensors, meta = optimizer_to_flat(opt)
    meta = json.loads(json.dumps(meta))  # the non-tensor part survives JSON
    restored = torch.optim.AdamW(model.parameters(), lr=1.0)
    optimizer_from_flat(restored, tensors, meta)
    a, b = opt.state_dict(), restored.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"]
    for pid in a["state"]:
        for name, value in a["state"][pid].items():
            assert torch.equal(value, b["state"][pid][name])


def test_npz_frames_round_trip_and_renumber_episodes(tmp_path, frames):
    save_frames_npz(tmp_path / "a.npz", frames)
    save_frames_npz(tmp_path / "b.npz", frames)
    data, meta = load_npz_frames([tmp_path / "a.npz", tmp_path / "b.npz"])
    loaded = Frames.from_dict(data, meta)
    assert len(loaded) == 2 * len(frames) and loaded.joint_names == REACH_JOINTS
    assert len(loaded.episode_ids()) == 2 * len(frames.episode_ids())
    np.savez(tmp_path / "obj.npz", bad=np.array([{"a": 1}], dtype=object))
    (tmp_path / "obj.json").write_text("{}")
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz_frames(tmp_path / "obj.npz")


@pytest.mark.parametrize("kwargs, field", [
    ({"policy": "rnn"}, "policy"),
    ({"steps": 0}, "steps"),
    ({"batch_size": None}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"val_fraction": 0.95}, "val_fraction"),
    ({"num_workers": 2}, "num_workers"),
    ({"grad_clip": -1.0}, "grad_clip"),
    ({"state_noise": -0.01}, "state_noise"),
    ({"state_noise_fraction": 1.5}, "state_noise_fraction"),
    ({"state_noise_joints": "elbow"}, "state_noise_joints"),
    ({"device": "tpu?"}, "device"),
    ({"policy": "mlp", "policy_config": ACTConfig()}, "policy_config"),
])
def test_train_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**kwargs)


def test_main_from_args_reports_a_bad_config(tmp_path, frames, capsys):
    save_frames_npz(tmp_path / "d.npz", frames)
    rc = main_from_args(["--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"), "--steps", "0"])
    assert rc == 2 and "TrainConfig.steps" in capsys.readouterr().err


def test_progress_line_in_a_log_is_throttled():
    class Log:
        lines: list[str] = []

        def write(self, text):
            self.lines.append(text)

        def flush(self):
            pass

    log = Log()
    bar = ProgressLine(10, stream=log)
    for step in range(1, 11):
        bar.update(step, force=step == 10, loss=0.5)
    assert len(log.lines) == 2 and log.lines[-1].startswith("step 10/10  loss 0.5")


def test_torchrun_two_processes_with_gloo(tmp_path, frames):
    save_frames_npz(tmp_path / "demo.npz", frames)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lam_policy.train", "--data", str(tmp_path / "demo.npz"), "--out", str(out), "--policy", "act",
           "--policy-config", json.dumps(SMALL_ACT), "--steps", "4", "--batch-size", "8", "--checkpoint-every", "2",
           "--val-every", "2", "--device", "cpu", "--quiet"]
    # Own session: on a timeout the launcher AND its workers are killed (no leaked ranks).
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                             start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["steps"] == 4
    policy = load_policy(out, expected_joint_names=REACH_JOINTS)
    assert policy.policy_type == "act"
    assert (out / "last").read_text().strip() == "checkpoints/step_000004"
    state = json.loads((out / "checkpoints" / "step_000002" / "training_state.json").read_text())
    assert state["world_size"] == 2
