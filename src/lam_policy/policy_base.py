"""What every learned policy shares: config fields, normalisation, the inference buffers
(observation history, temporal ensembling, chunk queue), checkpoint save/load and the surface
``reset`` / ``select_action`` / ``predict_action_chunk`` / ``forward`` / ``save`` / ``load``.

A subclass (``ACTPolicy``, ``MLPPolicy``) only builds its layers in ``_build`` and maps normalised
observation windows to a normalised action chunk in ``_chunk`` and to a loss in ``_loss``.
"""
from __future__ import annotations

import importlib
import math
from collections import deque
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from lam_policy.checkpoint import (CONFIG_FILE, STATS_FILE, WEIGHTS_FILE, CheckpointError, check_joint_names,
                                   read_checkpoint, save_checkpoint)
from lam_policy.frames import ACTION, OBSERVATION_KEYS, STATE

POLICY_TYPES: dict[str, type[BasePolicy]] = {}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else as torch spells it."""
    if device is None:
        raise ValueError("device is None; use 'auto', 'cpu' or 'cuda[:N]'")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def check_device_name(owner: str, device) -> None:
    if device is None:
        raise ValueError(f"{owner}.device is None; use 'auto', 'cpu' or 'cuda[:N]'")
    if device != "auto":
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"{owner}.device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from None


@dataclass
class PolicyConfig:
    """Fields every policy has. Units: ``temporal_ensemble`` is per control step."""

    observation_keys: tuple[str, ...] = (STATE,)  # state always; object_poses, keypoints optional
    history: int = 2  # observation frames per decision (t-h+1..t)
    # K: actions predicted per decision (2/3 s at 30 Hz). 20 rather than 10 on the sim tasks (ACT,
    # 16000 steps, 60 unseen seeds): pick_place 100% vs 80%, push 93% vs 90% (README); with
    # 10 the policy could stall where its next third of a second looked like standing still.
    chunk: int = 20
    n_action_steps: int | None = None  # actions executed per chunk without ensembling (None = K)
    temporal_ensemble: float | None = 0.01  # ACT's m in w_i = exp(-m i), oldest i=0; None = off
    dropout: float = 0.1
    std_floor: float = 1e-2  # floor of the normalisation std (a constant feature stays finite)
    # Predict each chunk step as an offset from the current joint state (the newest state frame)
    # instead of an absolute target. The state and action must name the same joints in the same
    # order (the dataset's do). An offset that is zero where the demonstrations stop holds still
    # there, so small imitation errors do not become a standing offset from the goal.
    # Measured on the sim tasks (small ACT, 50 demos each, with observation.tcp): reach 95% with
    # it vs 70% without; push 70% either way; pick_place 50% vs 40%.
    relative_actions: bool = True
    # Joints (by name) that stay absolute targets under ``relative_actions`` (no effect without
    # it): an open/close gripper, whose command is one of two set points, not a motion. As an
    # offset from the measured finger opening (which wanders while a cube shifts in the grip), a
    # half-learnt close is a weak grip or a limit cycle of re-opening; as a target it is the set
    # point. `lam train` puts the robot's gripper joints here unless told otherwise. Measured
    # (small ACT, 8000 steps, 50 demos, 20 episodes at eval seeds 1000 / 2000): pick_place 80% /
    # 80% with the fingers absolute vs 20% / 10% all relative; reach and push within noise.
    absolute_action_joints: tuple[str, ...] = ()
    device: str = "auto"

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in fields(self):
            if getattr(self, f.name) is None and f.name not in ("n_action_steps", "temporal_ensemble"):
                raise ValueError(f"{name}.{f.name} is None")
        keys = self.observation_keys
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"{name}.observation_keys must be a list of feature names, got {keys!r}")
        self.observation_keys = tuple(keys)
        unknown = [k for k in self.observation_keys if k not in OBSERVATION_KEYS]
        if unknown or STATE not in self.observation_keys or len(set(keys)) != len(keys):
            raise ValueError(f"{name}.observation_keys must include {STATE!r} and only {OBSERVATION_KEYS}, "
                             f"each once, got {keys!r}")
        self._positive_ints(name, ("history", "chunk"))
        if self.n_action_steps is not None and not 1 <= self.n_action_steps <= self.chunk:
            raise ValueError(f"{name}.n_action_steps must be in 1..chunk ({self.chunk}) or None, "
                             f"got {self.n_action_steps!r}")
        te = self.temporal_ensemble
        if te is not None and not (isinstance(te, (int, float)) and math.isfinite(te) and te >= 0):
            raise ValueError(f"{name}.temporal_ensemble must be a finite number >= 0 or None, got {te!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{name}.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.relative_actions, bool):
            raise ValueError(f"{name}.relative_actions must be true or false, got {self.relative_actions!r}")
        joints = self.absolute_action_joints
        if isinstance(joints, str) or not all(isinstance(j, str) for j in joints) or len(set(joints)) != len(joints):
            raise ValueError(f"{name}.absolute_action_joints must be a list of distinct joint names, got {joints!r}")
        self.absolute_action_joints = tuple(joints)
        if not (math.isfinite(self.std_floor) and self.std_floor > 0):
            raise ValueError(f"{name}.std_floor must be finite and > 0, got {self.std_floor!r}")
        check_device_name(name, self.device)

    def _positive_ints(self, name: str, names) -> None:
        for field_name in names:
            value = getattr(self, field_name)
            if value is None:
                raise ValueError(f"{name}.{field_name} is None")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{field_name} must be an integer >= 1, got {value!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict):
        """From ``to_dict`` output (a JSON object); unknown fields are an error."""
        if data is None:
            raise ValueError(f"{cls.__name__}.from_dict: data is None")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _buffer_name(key: str, what: str) -> str:
    return f"{key.replace('.', '__')}__{what}"


class Normaliser(nn.Module):
    """Per-feature (x - mean) / std with mean/std from the training data, kept as buffers that move
    with the model but are saved to stats.json (not the weights)."""

    def __init__(self, features: dict[str, int], stats: dict | None):
        super().__init__()
        self.features = dict(features)
        for key, dim in self.features.items():
            mean = np.zeros(dim) if stats is None else np.asarray(stats[key]["mean"], dtype=np.float64)
            std = np.ones(dim) if stats is None else np.asarray(stats[key]["std"], dtype=np.float64)
            if mean.shape != (dim,) or std.shape != (dim,) or not np.all(std > 0) or not np.all(np.isfinite(mean)):
                raise ValueError(f"stats for {key!r}: need finite mean and positive std of shape ({dim},), got "
                                 f"{mean.shape} and {std.shape}")
            self.register_buffer(_buffer_name(key, "mean"), torch.tensor(mean, dtype=torch.float32), persistent=False)
            self.register_buffer(_buffer_name(key, "std"), torch.tensor(std, dtype=torch.float32), persistent=False)

    def normalise(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, _buffer_name(key, "mean"))) / getattr(self, _buffer_name(key, "std"))

    def unnormalise(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return x * getattr(self, _buffer_name(key, "std")) + getattr(self, _buffer_name(key, "mean"))

    def to_json(self) -> dict:
        return {key: {"mean": getattr(self, _buffer_name(key, "mean")).tolist(),
                      "std": getattr(self, _buffer_name(key, "std")).tolist()} for key in self.features}


class TemporalEnsembler:
    """ACT's temporal ensembling: the action at step t is the weighted mean of every stored chunk's
    prediction for t, w_i = exp(-m i) with i = 0 the oldest chunk still covering t."""

    def __init__(self, coef: float, chunk: int):
        self.coef, self.chunk = float(coef), chunk
        self.weights = np.exp(-self.coef * np.arange(chunk))  # (K,)
        self.chunks: deque[np.ndarray] = deque(maxlen=chunk)

    def reset(self) -> None:
        self.chunks.clear()

    def update(self, chunk: np.ndarray) -> np.ndarray:
        """Add the chunk predicted at this step (K, A); return this step's action (A,)."""
        self.chunks.append(chunk)
        n = len(self.chunks)
        preds = np.stack([c[n - 1 - i] for i, c in enumerate(self.chunks)])  # (n, A), oldest first
        w = self.weights[:n]
        return (w @ preds) / w.sum()


class BasePolicy(nn.Module):
    """A policy: observation windows -> K-step chunk of joint targets (see module docstring)."""

    policy_type: ClassVar[str] = ""
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.policy_type:
            POLICY_TYPES[cls.policy_type] = cls

    def __init__(self, config: PolicyConfig, features: dict[str, int], joint_names: list[str], fps: float,
                 stats: dict | None = None):
        super().__init__()
        if config is None or not isinstance(config, self.config_class):
            raise ValueError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        needed = [*config.observation_keys, ACTION]
        missing = [k for k in needed if k not in features]
        if missing:
            raise ValueError(f"features has no {missing[0]!r}; the config uses {needed}")
        if len(joint_names) != features[ACTION]:
            raise ValueError(f"joint_names has {len(joint_names)} names for an action of width {features[ACTION]}")
        if config.relative_actions and int(features[STATE]) != int(features[ACTION]):
            raise ValueError(f"relative_actions needs a state as wide as the action, got {features[STATE]} "
                             f"state and {features[ACTION]} action values")
        self.config = config
        self.features = {k: int(features[k]) for k in needed}
        self.joint_names = [str(j) for j in joint_names]
        # (A,) 1 where the action is an offset from the newest state, 0 where it is absolute.
        relative = relative_action_mask(config, self.joint_names)
        self.fps = float(fps)
        self.device = resolve_device(config.device)
        self.normaliser = Normaliser(self.features, stats)
        self.register_buffer("relative_mask", torch.tensor(relative, dtype=torch.float32), persistent=False)
        self._build()
        self.to(self.device)
        self.reset()

    # ---------------------------------------------------------------- subclass hooks
    def _build(self) -> None:
        raise NotImplementedError

    def _chunk(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalised observation windows {key: (B, H, D)} -> normalised chunk (B, K, A)."""
        raise NotImplementedError

    def _loss(self, obs: dict[str, torch.Tensor], actions: torch.Tensor, pad: torch.Tensor):
        """Normalised windows, actions (B, K, A) and pad mask (B, K) -> (loss, logs)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the surface
    def reset(self) -> None:
        """Forget the observation history and queued/ensembled actions (call at episode start)."""
        self._history: deque[dict[str, torch.Tensor]] = deque(maxlen=self.config.history)
        # The plan from this step on (K', A) after select_action: the newest chunk when ensembling,
        # else the rest of the chunk being executed. Streamed as a trajectory by the runtime.
        self.last_chunk: np.ndarray | None = None
        self._queue: deque[np.ndarray] = deque()
        te = self.config.temporal_ensemble
        self._ensembler = TemporalEnsembler(te, self.config.chunk) if te is not None else None

    def _as_tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32).to(self.device)

    def _normalised_obs(self, obs: dict) -> dict[str, torch.Tensor]:
        out = {}
        for key in self.config.observation_keys:
            if key not in obs:
                raise ValueError(f"observation has no {key!r}; the policy uses {list(self.config.observation_keys)}")
            x = self._as_tensor(obs[key])
            if x.ndim != 3 or x.shape[1] != self.config.history or x.shape[2] != self.features[key]:
                raise ValueError(f"observation {key!r} must be (B, {self.config.history}, {self.features[key]}), "
                                 f"got {tuple(x.shape)}")
            out[key] = self.normaliser.normalise(key, x)
        return out

    def predict_action_chunk(self, obs_batch: dict) -> torch.Tensor:
        """Observation windows {key: (B, H, D)} (raw units) -> joint targets (B, K, A), raw units.
        Always evaluates in inference mode (no dropout, VAE latent at the prior mean)."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                chunk = self.normaliser.unnormalise(ACTION, self._chunk(self._normalised_obs(obs_batch)))
                if self.config.relative_actions:
                    chunk = chunk + self._as_tensor(obs_batch[STATE])[:, -1:, :] * self.relative_mask
                return chunk
        finally:
            self.train(was_training)

    def select_action(self, obs: dict) -> np.ndarray:
        """One control step: this frame's observation {key: (D,)} -> joint targets (A,) in
        ``joint_names`` order. Keeps its own history (filled with the first frame after ``reset``)
        and, with ``temporal_ensemble`` set, predicts a chunk every step and ensembles; otherwise
        executes ``n_action_steps`` of each chunk before predicting the next."""
        frame = {}
        for key in self.config.observation_keys:
            if key not in obs:
                raise ValueError(f"observation has no {key!r}; the policy uses {list(self.config.observation_keys)}")
            frame[key] = self._as_tensor(obs[key]).reshape(-1)
        while len(self._history) < self.config.history - 1:
            self._history.append(frame)
        self._history.append(frame)
        if self._ensembler is None and self._queue:
            self.last_chunk = np.array(self._queue)
            return self._queue.popleft()
        window = {k: torch.stack([f[k] for f in self._history])[None] for k in frame}  # (1, H, D)
        chunk = self.predict_action_chunk(window)[0].double().cpu().numpy()  # (K, A)
        if self._ensembler is not None:
            self.last_chunk = chunk
            return self._ensembler.update(chunk)
        self._queue.extend(chunk[: self.config.n_action_steps or self.config.chunk])
        self.last_chunk = np.array(self._queue)
        return self._queue.popleft()

    def select_plan(self, obs: dict) -> tuple[np.ndarray, np.ndarray]:
        """``select_action`` plus the rest of the plan it belongs to, for streaming as a trajectory:
        times (P,) s from now at 1/fps spacing, and targets (P, A) — the selected action, then the
        newest chunk's (or the queue's) next steps."""
        first = np.asarray(self.select_action(obs), dtype=float)
        plan = first[None] if self.last_chunk is None else np.vstack([first, self.last_chunk[1:]])
        return (np.arange(len(plan)) + 1) / self.fps, plan

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on raw-unit windows: {obs key: (B, H, D), 'action': (B, K, A),
        'action_is_pad': (B, K) bool (optional)} -> (scalar loss, logs of floats)."""
        obs = self._normalised_obs(batch)
        actions = self._as_tensor(batch[ACTION])
        if self.config.relative_actions:
            actions = actions - self._as_tensor(batch[STATE])[:, -1:, :] * self.relative_mask
        actions = self.normaliser.normalise(ACTION, actions)
        if actions.ndim != 3 or actions.shape[1:] != (self.config.chunk, self.features[ACTION]):
            raise ValueError(f"batch 'action' must be (B, {self.config.chunk}, {self.features[ACTION]}), "
                             f"got {tuple(actions.shape)}")
        pad = batch.get("action_is_pad")
        pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=self.device) if pad is None \
            else torch.as_tensor(pad, dtype=torch.bool).to(self.device)
        return self._loss(obs, actions, pad)

    # ---------------------------------------------------------------- checkpoints
    def save(self, directory) -> Path:
        """Write model.safetensors, config.json and stats.json to ``directory``. The saved config's
        device is 'auto': where to run is chosen by ``load(device=...)``, not by the checkpoint."""
        config = {**self.config.to_dict(), "device": "auto"}
        return save_checkpoint(directory, policy_type=self.policy_type, config=config,
                               joint_names=self.joint_names, fps=self.fps, features=self.features,
                               state_dict=self.state_dict(), stats=self.normaliser.to_json())

    @classmethod
    def load(cls, directory, expected_joint_names: list[str] | None = None, device: str = "auto") -> BasePolicy:
        """Load a checkpoint folder, verified (files, sha256, policy type, shapes, joint names);
        any problem raises CheckpointError naming the file. Returned in eval mode on ``device``."""
        expected_type = cls.policy_type or None
        files = read_checkpoint(directory, expected_type)
        meta = files.meta
        target = POLICY_TYPES.get(meta["policy_type"])
        if target is None:
            raise CheckpointError(f"{CONFIG_FILE}: unknown policy_type {meta['policy_type']!r}; known: {sorted(POLICY_TYPES)}")
        try:
            config = replace(target.config_class.from_dict(meta["config"]), device=device)
            features = {k: int(v[0]) for k, v in meta["features"].items()}
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise CheckpointError(f"{CONFIG_FILE}: invalid config ({exc})") from None
        check_joint_names(meta["joint_names"], expected_joint_names)
        try:
            policy = target(config, features, meta["joint_names"], meta["fps"], files.stats)
        except (ValueError, KeyError, TypeError) as exc:
            name = STATS_FILE if isinstance(exc, KeyError) or "stats" in str(exc) else CONFIG_FILE
            raise CheckpointError(f"{name}: does not fit the model ({exc})") from None
        _load_weights(policy, files.state_dict)
        return policy.eval()


def relative_action_mask(config: PolicyConfig, joint_names: list[str]) -> np.ndarray:
    """(A,) 1.0 for each action joint predicted as an offset from the newest state, 0.0 for an
    absolute target: all 0 without ``relative_actions``, else 0 only at ``absolute_action_joints``."""
    unknown = [j for j in config.absolute_action_joints if j not in joint_names]
    if unknown:
        raise ValueError(f"absolute_action_joints {unknown} are not action joints {list(joint_names)}")
    if not config.relative_actions:
        return np.zeros(len(joint_names))
    return np.array([0.0 if j in config.absolute_action_joints else 1.0 for j in joint_names])


def masked_l1(pred: torch.Tensor, actions: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean |pred - actions| over the chunk steps that are not padding: (B, K, A), (B, K, A), (B, K)."""
    valid = (~pad).unsqueeze(-1).to(pred.dtype)  # (B, K, 1)
    return ((pred - actions).abs() * valid).sum() / (valid.sum() * actions.shape[-1]).clamp_min(1.0)


def _load_weights(policy: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    own = policy.state_dict()
    missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{WEIGHTS_FILE}: tensors do not match the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for name, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointError(f"{WEIGHTS_FILE}: {name} has shape {tuple(tensor.shape)}, the model expects "
                                  f"{tuple(own[name].shape)}")
    policy.load_state_dict(state_dict)


def load_policy(directory, expected_joint_names: list[str] | None = None, device: str = "auto") -> BasePolicy:
    """Load any policy type from a checkpoint folder (dispatch on config.json's policy_type)."""
    for module in ("lam_policy.act", "lam_policy.mlp"):  # importing registers the policy type
        importlib.import_module(module)

    return BasePolicy.load(directory, expected_joint_names, device)
