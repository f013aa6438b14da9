"""ACT and MLP policies: overfitting a few demonstrations, temporal ensembling, checkpoints,
config validation and device selection. Data: the seeded synthetic reach task (bench_act)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lam_policy.act import ACTConfig, ACTPolicy
from lam_policy.bench_act import REACH_JOINTS, synthetic_reach_frames
from lam_policy.checkpoint import CheckpointError
from lam_policy.frames import (ACTION, EPISODE, KEYPOINTS, OBJECT_POSES, STATE, Frames, WindowSource, compute_stats,
                               relative_action_stats, window_indices)
from lam_policy.mlp import MLPConfig, MLPPolicy
from lam_policy.policy_base import load_policy, relative_action_mask, resolve_device
from lam_policy.train import TrainConfig, train

KEYS = (STATE, OBJECT_POSES)
SMALL_ACT = dict(d_model=64, heads=4, encoder_layers=1, decoder_layers=1, ff_dim=128, latent_dim=8, vae_layers=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames() -> Frames:
    return synthetic_reach_frames(n_episodes=4, seed=0)


def make_policy(kind: str, frames: Frames, **overrides):
    torch.manual_seed(0)
    keys = overrides.pop("observation_keys", KEYS)
    if kind == "act":
        config = ACTConfig(observation_keys=keys, **{**SMALL_ACT, "chunk": 8, **overrides})
        cls = ACTPolicy
    else:
        config = MLPConfig(observation_keys=keys, **{"chunk": 8, **overrides})
        cls = MLPPolicy
    names = (*keys, ACTION)
    return cls(config, frames.feature_dims(names), frames.joint_names, frames.fps,
               compute_stats(frames, names)).eval()


def windows(policy, frames: Frames, rows) -> dict:
    source = WindowSource(frames, (*policy.config.observation_keys, ACTION), policy.config.history,
                          policy.config.chunk, policy.device)
    return source.batch(np.asarray(rows))


def episode_obs(frames: Frames, keys, episode: int) -> list[dict]:
    rows = np.flatnonzero(frames.data[EPISODE] == episode)
    return [{k: frames.data[k][r] for k in keys} for r in rows]


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("kind, steps, lr, extra", [
    ("act", 1000, 1e-3, SMALL_ACT),
    ("mlp", 1500, 3e-3, {}),
])
def test_policy_overfits_a_few_demonstrations(tmp_path, frames, kind, steps, lr, extra):
    config = TrainConfig(policy=kind, policy_config={"observation_keys": list(KEYS), "chunk": 10, "dropout": 0.0,
                                                     **extra},
                         steps=steps, batch_size=32, lr=lr, warmup_steps=20, val_fraction=0.0, val_every=0,
                         checkpoint_every=0)
    train(frames, tmp_path, config, progress=False)
    policy = load_policy(tmp_path, expected_joint_names=REACH_JOINTS)
    with torch.no_grad():
        _, logs = policy(windows(policy, frames, np.arange(len(frames))))
    assert logs["l1"] < 0.05, f"{kind}: replay L1 {logs['l1']:.4f} (normalised units) after {steps} steps"
    # Closed-loop-free replay through select_action (temporal ensembling on): the executed action
    # tracks the demonstration's within 0.05 normalised units on average.
    std = np.asarray(policy.normaliser.to_json()[ACTION]["std"])
    policy.reset()
    errors = [np.abs(policy.select_action(o) - frames.data[ACTION][i]) / std
              for i, o in enumerate(episode_obs(frames, KEYS, 0))]
    assert np.mean(errors) < 0.05


def test_windows_clamp_history_and_pad_past_the_episode_end():
    start, end = torch.tensor([10, 10, 10]), torch.tensor([15, 15, 15])
    obs_idx, act_idx, pad = window_indices(torch.tensor([10, 11, 14]), start, end, history=3, chunk=3)
    assert obs_idx.tolist() == [[10, 10, 10], [10, 10, 11], [12, 13, 14]]
    assert act_idx.tolist() == [[10, 11, 12], [11, 12, 13], [14, 14, 14]]
    assert pad.tolist() == [[False] * 3, [False] * 3, [False, True, True]]


def test_padding_is_excluded_from_the_loss(frames):
    policy = make_policy("mlp", frames, dropout=0.0)
    batch = windows(policy, frames, [len(frames) - 1])  # last frame: all but one step is padding
    assert batch["action_is_pad"][0].sum() == policy.config.chunk - 1
    loss_a, _ = policy(batch)
    batch["action"][:, 1:] += 100.0  # garbage in the padded steps changes nothing
    loss_b, _ = policy(batch)
    assert torch.allclose(loss_a, loss_b)


def test_act_with_keypoints_and_without_vae_trains_a_step():
    frames = synthetic_reach_frames(n_episodes=2, seed=1, keypoints=True)
    for use_vae in (True, False):
        policy = make_policy("act", frames, observation_keys=(STATE, OBJECT_POSES, KEYPOINTS), use_vae=use_vae).train()
        loss, logs = policy(windows(policy, frames, np.arange(16)))
        loss.backward()
        assert np.isfinite(logs["loss"]) and ("kl" in logs)
        assert all(p.grad is not None for n, p in policy.named_parameters() if not n.startswith("vae"))
        policy.eval().reset()
        action = policy.select_action({k: frames.data[k][0] for k in (STATE, OBJECT_POSES, KEYPOINTS)})
        assert action.shape == (len(REACH_JOINTS),) and np.all(np.isfinite(action))


# ----------------------------------------------------------------------------- inference buffers


@pytest.mark.parametrize("kind", ["act", "mlp"])
@pytest.mark.parametrize("coef, relative", [(0.0, False), (0.3, False), (0.3, True)])
def test_online_temporal_ensembling_equals_offline(frames, kind, coef, relative):
    policy = make_policy(kind, frames, history=3, temporal_ensemble=coef, relative_actions=relative)
    rows = np.flatnonzero(frames.data[EPISODE] == 1)
    chunks = policy.predict_action_chunk({k: v for k, v in windows(policy, frames, rows).items()
                                          if k in KEYS}).double().numpy()  # (T, K, A)
    k = policy.config.chunk
    offline = []
    for t in range(len(rows)):
        starts = range(max(0, t - k + 1), t + 1)  # oldest first: i = 0 gets exp(0)
        w = np.exp(-coef * np.arange(len(starts)))
        preds = np.stack([chunks[s, t - s] for s in starts])
        offline.append(w @ preds / w.sum())
    policy.reset()
    online = [policy.select_action(o) for o in episode_obs(frames, KEYS, 1)]
    np.testing.assert_allclose(np.array(online), np.array(offline), atol=1e-5)


def test_chunk_execution_without_ensembling(frames):
    policy = make_policy("mlp", frames, temporal_ensemble=None, n_action_steps=5)
    rows = np.flatnonzero(frames.data[EPISODE] == 2)
    chunks = policy.predict_action_chunk({k: v for k, v in windows(policy, frames, rows).items()
                                          if k in KEYS}).double().numpy()
    policy.reset()
    online = np.array([policy.select_action(o) for o in episode_obs(frames, KEYS, 2)])
    expected = np.array([chunks[t - t % 5, t % 5] for t in range(len(rows))])
    np.testing.assert_allclose(online, expected, atol=1e-5)


def test_select_action_rejects_a_missing_or_misshaped_observation(frames):
    policy = make_policy("act", frames)
    with pytest.raises(ValueError, match="observation.object_poses"):
        policy.select_action({STATE: frames.data[STATE][0]})
    with pytest.raises(ValueError, match=r"observation.state.*\(B, 2, 5\)"):
        policy.predict_action_chunk({STATE: np.zeros((1, 2, 4)), OBJECT_POSES: np.zeros((1, 2, 7))})


def test_relative_actions_are_offsets_from_the_newest_state(frames):
    policy = make_policy("mlp", frames, relative_actions=True, history=2)
    head = policy.net[-1]
    head.weight.data.zero_()
    head.bias.data.zero_()  # normalised offset 0 -> the offset is the stats' mean
    batch = {k: v for k, v in windows(policy, frames, np.arange(30)).items() if k in KEYS}
    chunk = policy.predict_action_chunk(batch)
    mean = torch.as_tensor(policy.normaliser.to_json()[ACTION]["mean"])
    expected = batch[STATE][:, -1:, :] + mean
    torch.testing.assert_close(chunk, expected.expand_as(chunk), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="relative_actions needs a state as wide as the action"):
        MLPPolicy(MLPConfig(observation_keys=(STATE,), relative_actions=True), {STATE: 4, ACTION: 5},
                  REACH_JOINTS, 30.0)


def test_absolute_action_joints_stay_targets_under_relative_actions(frames):
    """The gripper column is the predicted target itself; the arm columns are state + offset."""
    policy = make_policy("mlp", frames, relative_actions=True, absolute_action_joints=("gripper",), history=2)
    head = policy.net[-1]
    head.weight.data.zero_()
    head.bias.data.zero_()  # normalised 0 -> the stats' mean
    batch = {k: v for k, v in windows(policy, frames, np.arange(30)).items() if k in KEYS}
    chunk = policy.predict_action_chunk(batch)  # (B, K, A)
    mean = torch.as_tensor(policy.normaliser.to_json()[ACTION]["mean"])
    gripper = REACH_JOINTS.index("gripper")
    expected = batch[STATE][:, -1:, :] + mean
    expected[..., gripper] = mean[gripper]
    torch.testing.assert_close(chunk, expected.expand_as(chunk), atol=1e-5, rtol=0)
    # The training target is the same split: a chunk equal to the data gives zero loss there.
    rows = np.arange(0, 200, 7)
    win = windows(policy, frames, rows)
    stats = relative_action_stats(frames, rows, policy.config.chunk, mask=relative_action_mask(
        policy.config, frames.joint_names))
    offsets = win[ACTION] - win[STATE][:, -1:, :] * torch.tensor([1.0, 1, 1, 1, 0])
    valid = offsets[~win["action_is_pad"]].double()  # (N, A)
    np.testing.assert_allclose(stats["mean"], valid.mean(0).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"absolute_action_joints \['finger'\] are not action joints"):
        make_policy("mlp", frames, absolute_action_joints=("finger",))


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind, relative, absolute", [("act", False, ()), ("mlp", False, ()), ("act", True, ()),
                                                      ("act", True, ("gripper",))])
def test_save_load_gives_identical_outputs(tmp_path, frames, kind, relative, absolute):
    policy = make_policy(kind, frames, relative_actions=relative, absolute_action_joints=absolute)
    policy.save(tmp_path)
    loaded = (ACTPolicy if kind == "act" else MLPPolicy).load(tmp_path, expected_joint_names=REACH_JOINTS,
                                                              device="cpu")
    generic = load_policy(tmp_path)
    batch = {k: v for k, v in windows(policy, frames, np.arange(40)).items() if k in KEYS}
    expected = policy.predict_action_chunk(batch)
    assert torch.equal(loaded.predict_action_chunk(batch), expected)
    assert torch.equal(generic.predict_action_chunk(batch), expected)
    assert loaded.joint_names == REACH_JOINTS and loaded.fps == frames.fps
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["policy_type"] == kind and meta["features"][STATE] == [5] and len(meta["weights_sha256"]) == 64


@pytest.fixture
def saved_act(tmp_path, frames):
    make_policy("act", frames).save(tmp_path)
    return tmp_path


def test_tampered_weights_are_refused(saved_act):
    path = saved_act / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=r"^model\.safetensors: sha256 .* modified or corrupted"):
        ACTPolicy.load(saved_act)


def test_wrong_joint_names_are_refused_listing_both(saved_act):
    robot = ["shoulder", "elbow", "wrist", "roll", "gripper"]
    with pytest.raises(CheckpointError, match=r"config\.json: joint names .*joint1.* vs robot .*shoulder"):
        ACTPolicy.load(saved_act, expected_joint_names=robot)
    with pytest.raises(CheckpointError, match="different order"):
        ACTPolicy.load(saved_act, expected_joint_names=list(reversed(REACH_JOINTS)))


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "stats.json"])
def test_missing_file_is_refused(saved_act, name):
    (saved_act / name).unlink()
    with pytest.raises(CheckpointError, match=rf"^{name.replace('.', '[.]')}: missing"):
        load_policy(saved_act)


def test_wrong_policy_type_is_refused(saved_act):
    meta = json.loads((saved_act / "config.json").read_text())
    meta["policy_type"] = "mlp"
    (saved_act / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"^config\.json: policy_type 'mlp', expected 'act'"):
        ACTPolicy.load(saved_act)
    with pytest.raises(CheckpointError, match=r"^config\.json: invalid config .*unknown fields"):
        load_policy(saved_act)  # dispatches to MLP, whose config has no d_model


def test_edited_stats_and_broken_json_are_refused(saved_act):
    stats = json.loads((saved_act / "stats.json").read_text())
    stats[STATE]["mean"][0] += 1.0
    (saved_act / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match=r"^stats\.json: sha256"):
        ACTPolicy.load(saved_act)
    (saved_act / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"^config\.json: not readable JSON"):
        ACTPolicy.load(saved_act)


# ----------------------------------------------------------------------------- configs, devices


@pytest.mark.parametrize("cls, kwargs, field", [
    (ACTConfig, {"d_model": None}, "d_model"),
    (ACTConfig, {"d_model": 100, "heads": 3}, "d_model"),
    (ACTConfig, {"chunk": 0}, "chunk"),
    (ACTConfig, {"history": 1.5}, "history"),
    (ACTConfig, {"observation_keys": (OBJECT_POSES,)}, "observation_keys"),
    (ACTConfig, {"observation_keys": (STATE, "observation.image")}, "observation_keys"),
    (ACTConfig, {"temporal_ensemble": -0.1}, "temporal_ensemble"),
    (ACTConfig, {"n_action_steps": 30}, "n_action_steps"),
    (ACTConfig, {"dropout": 1.0}, "dropout"),
    (ACTConfig, {"kl_weight": float("nan")}, "kl_weight"),
    (ACTConfig, {"use_vae": "yes"}, "use_vae"),
    (ACTConfig, {"device": "gpu0"}, "device"),
    (MLPConfig, {"hidden_dims": ()}, "hidden_dims"),
    (MLPConfig, {"std_floor": 0.0}, "std_floor"),
    (MLPConfig, {"relative_actions": 1}, "relative_actions"),
    (MLPConfig, {"absolute_action_joints": "gripper"}, "absolute_action_joints"),
    (ACTConfig, {"absolute_action_joints": ("gripper", "gripper")}, "absolute_action_joints"),
])
def test_config_validation_names_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}"):
        cls(**kwargs)


def test_config_round_trips_through_json():
    config = ACTConfig(observation_keys=KEYS, chunk=12, temporal_ensemble=None)
    assert ACTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown fields"):
        ACTConfig.from_dict({"chunk": 3, "hidden_dims": [4]})


def test_frames_validation():
    frames = synthetic_reach_frames(n_episodes=2, seed=0)
    data = dict(frames.data)
    data[EPISODE] = np.r_[data[EPISODE][1:], data[EPISODE][:1]]  # episode 0 split into two runs
    with pytest.raises(ValueError, match="contiguous"):
        Frames(data, REACH_JOINTS, 30.0)
    with pytest.raises(ValueError, match="joint_names"):
        Frames(dict(frames.data), REACH_JOINTS[:-1], 30.0)
    with pytest.raises(ValueError, match="Frames.fps"):
        Frames(dict(frames.data), REACH_JOINTS, 0.0)
    bad = dict(frames.data)
    bad[STATE] = bad[STATE].copy()
    bad[STATE][3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Frames(bad, REACH_JOINTS, 30.0)
    with pytest.raises(ValueError, match="metadata has no 'fps'"):
        Frames.from_dict(dict(frames.data), {"joint_names": REACH_JOINTS})


def test_device_auto_picks_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["act", "mlp"])
def test_cuda_matches_cpu(tmp_path, frames, kind):
    policy = make_policy(kind, frames)
    policy.save(tmp_path)
    cuda = load_policy(tmp_path, device="cuda")
    assert cuda.device.type == "cuda"
    batch = {k: v for k, v in windows(policy, frames, np.arange(40)).items() if k in KEYS}
    torch.testing.assert_close(cuda.predict_action_chunk(batch).cpu(), policy.predict_action_chunk(batch),
                               atol=1e-4, rtol=1e-4)
    cuda.reset()
    policy.reset()
    for obs in episode_obs(frames, KEYS, 0)[:10]:
        np.testing.assert_allclose(cuda.select_action(obs), policy.select_action(obs), atol=1e-4)
