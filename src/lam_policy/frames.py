"""Demonstration frames as policies and training see them, and the windows cut from them.

A ``Frames`` holds a dict of numpy arrays at a fixed rate ``fps``: ``observation.state`` (N, S),
optional ``observation.object_poses`` (N, P), ``observation.keypoints`` (N, 300) and
``observation.tcp`` (N, 3 + 3M, derived: see ``lam_policy.features``), ``action``
(N, A) and ``episode_index`` (N,), plus the ``joint_names`` (length A) the actions are for.
Episodes are contiguous runs of ``episode_index``.

A training sample at frame t is a window: the observation history t-h+1..t clamped to the
episode's first frame (so the first frames of an episode repeat, exactly as ``select_action``
fills its history after ``reset``) and the action chunk t..t+K-1, whose steps past the episode's
end are padding (``action_is_pad``) and excluded from the loss.

Until the dataset reader lands, frames also travel as ``.npz`` (never pickled) with a sidecar
``<stem>.json`` holding joint_names and fps (``save_frames_npz`` / ``load_npz_frames``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

STATE, OBJECT_POSES, KEYPOINTS, TCP, ACTION, EPISODE = (
    "observation.state", "observation.object_poses", "observation.keypoints", "observation.tcp", "action",
    "episode_index")
OBSERVATION_KEYS = (STATE, OBJECT_POSES, KEYPOINTS, TCP)


@dataclass
class Frames:
    """Demonstration frames: arrays by feature name, the action's joint names and the frame rate (Hz)."""

    data: dict[str, np.ndarray]
    joint_names: list[str]
    fps: float

    def __post_init__(self) -> None:
        for name in ("data", "joint_names", "fps"):
            if getattr(self, name) is None:
                raise ValueError(f"Frames.{name} is None")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"Frames.fps must be finite and > 0, got {self.fps!r}")
        self.fps = float(self.fps)
        for key in (STATE, ACTION, EPISODE):
            if key not in self.data:
                raise ValueError(f"Frames.data has no {key!r}; keys present: {sorted(self.data)}")
        self.data = {k: np.asarray(v) for k, v in self.data.items()}
        n = len(self.data[EPISODE])
        if self.data[EPISODE].ndim != 1 or not np.issubdtype(self.data[EPISODE].dtype, np.integer):
            raise ValueError(f"Frames.data['episode_index'] must be 1-D integers, got shape "
                             f"{self.data[EPISODE].shape} dtype {self.data[EPISODE].dtype}")
        for key in (*OBSERVATION_KEYS, ACTION):
            if key in self.data:
                self._check_feature(key, n)
        self.joint_names = [str(j) for j in self.joint_names]
        if len(self.joint_names) != self.data[ACTION].shape[1] or len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f"Frames.joint_names must name the {self.data[ACTION].shape[1]} action columns "
                             f"once each, got {self.joint_names}")
        self._check_contiguous()

    def _check_feature(self, key: str, n: int) -> None:
        arr = self.data[key]
        if arr.ndim != 2 or len(arr) != n or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"Frames.data[{key!r}] must be a float (N={n}, D) array, got shape {arr.shape} "
                             f"dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"Frames.data[{key!r}] has NaN or infinite values (first at row "
                             f"{int(np.argwhere(~np.isfinite(arr))[0][0])})")

    def _check_contiguous(self) -> None:
        ep = self.data[EPISODE]
        if len(ep) == 0:
            raise ValueError("Frames.data has no frames")
        starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
        ids = ep[starts]
        if len(np.unique(ids)) != len(ids):
            raise ValueError("Frames.data['episode_index']: an episode appears in more than one run; "
                             "episodes must be contiguous")

    @classmethod
    def from_dict(cls, data: dict, meta: dict | None = None) -> Frames:
        """From the dataset reader's (arrays, metadata) pair; metadata carries joint_names and fps."""
        if data is None:
            raise ValueError("Frames.from_dict: data is None")
        meta = meta or {}
        for key in ("joint_names", "fps"):
            if key not in meta:
                raise ValueError(f"Frames.from_dict: metadata has no {key!r}; keys present: {sorted(meta)}")
        return cls(dict(data), list(meta["joint_names"]), float(meta["fps"]))

    def __len__(self) -> int:
        return len(self.data[EPISODE])

    def feature_dims(self, keys) -> dict[str, int]:
        """Width of each named feature, e.g. {'observation.state': 8, 'action': 8}."""
        missing = [k for k in keys if k not in self.data]
        if missing:
            raise ValueError(f"Frames.data has no {missing[0]!r} (the policy config uses it); keys present: "
                             f"{sorted(self.data)}")
        return {k: int(self.data[k].shape[1]) for k in keys}

    def episode_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per frame, the first frame of its episode and one past its last: (N,), (N,)."""
        ep = self.data[EPISODE]
        starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
        ends = np.r_[starts[1:], len(ep)]
        run = np.cumsum(np.r_[True, ep[1:] != ep[:-1]]) - 1
        return starts[run], ends[run]

    def episode_ids(self) -> np.ndarray:
        """Episode ids in order of appearance."""
        ep = self.data[EPISODE]
        return ep[np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])]


def flatten_keypoints(kp) -> np.ndarray:
    """observation.keypoints (75 * 4,) from one Keypoints frame: x, y, z, confidence per landmark."""
    return np.concatenate([kp.points, kp.confidence[:, None]], axis=1).reshape(-1)


def window_indices(t: torch.Tensor, start: torch.Tensor, end: torch.Tensor, history: int, chunk: int):
    """Frame indices of the windows at frames ``t`` (B,), in episodes [start, end) (B,), (B,).

    Returns obs_idx (B, H) for t-H+1..t clamped to the episode start, act_idx (B, K) for
    t..t+K-1 clamped to the episode's last frame, and pad (B, K): True past the episode end.
    """
    back = torch.arange(history - 1, -1, -1, device=t.device)
    ahead = torch.arange(chunk, device=t.device)
    obs_idx = torch.maximum(t[:, None] - back[None], start[:, None])  # (B, H)
    act_raw = t[:, None] + ahead[None]  # (B, K)
    pad = act_raw >= end[:, None]
    act_idx = torch.minimum(act_raw, end[:, None] - 1)
    return obs_idx, act_idx, pad


def compute_stats(frames: Frames, keys, rows: np.ndarray | None = None, std_floor: float = 1e-2) -> dict:
    """Per-feature mean and std (floored at ``std_floor``) over ``rows`` (default: all frames)."""
    stats = {}
    for key in keys:
        arr = frames.data[key] if rows is None else frames.data[key][rows]
        arr = arr.astype(np.float64)
        stats[key] = {"mean": arr.mean(axis=0), "std": np.maximum(arr.std(axis=0), std_floor)}
    return stats


def relative_action_stats(frames: Frames, rows: np.ndarray, chunk: int, std_floor: float = 1e-2,
                          mask: np.ndarray | None = None) -> dict:
    """Mean and std (floored) of the chunk offsets action[t+k] - mask * state[t], k < ``chunk``,
    over the windows at ``rows`` (steps past an episode's end excluded), for ``relative_actions``.
    ``mask`` (A,) is 1 where the action is an offset, 0 where it stays absolute (default all 1)."""
    start, end = frames.episode_bounds()
    state, action = frames.data[STATE].astype(np.float64), frames.data[ACTION].astype(np.float64)
    if mask is not None:
        state = state * np.asarray(mask, dtype=np.float64)
    total, total_sq, count = 0.0, 0.0, 0
    for k in range(chunk):
        t = rows[rows + k < end[rows]]
        delta = action[t + k] - state[t]
        total, total_sq, count = total + delta.sum(0), total_sq + (delta ** 2).sum(0), count + len(t)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 0.0))
    return {"mean": mean, "std": np.maximum(std, std_floor)}


def load_npz_frames(paths) -> tuple[dict[str, np.ndarray], dict]:
    """Frames from .npz files (allow_pickle=False), each with metadata in a sidecar ``<stem>.json``
    ({"joint_names": [...], "fps": 30.0}). Several files are concatenated; episode indices are
    renumbered so episodes from different files stay distinct."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise ValueError("load_npz_frames: no files given")
    parts, meta = [], None
    for path in paths:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        side = path.with_suffix(".json")
        if not side.is_file():
            raise ValueError(f"{path}: metadata {side.name} (joint_names, fps) is missing next to it")
        file_meta = json.loads(side.read_text())
        if meta is not None and (file_meta.get("joint_names") != meta.get("joint_names")
                                 or file_meta.get("fps") != meta.get("fps")):
            raise ValueError(f"{path}: joint_names/fps differ from {paths[0]}; train on one robot at one rate")
        meta = meta or file_meta
        if parts and set(data) != set(parts[0]):
            raise ValueError(f"{path}: arrays {sorted(data)} differ from {paths[0]}'s {sorted(parts[0])}")
        if parts:
            data[EPISODE] = data[EPISODE] + parts[-1][EPISODE].max() + 1 - data[EPISODE].min()
        parts.append(data)
    keys = set(parts[0])
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}, meta


def save_frames_npz(path, frames: Frames) -> None:
    """Write frames as ``path`` (.npz) plus the ``<stem>.json`` metadata ``load_npz_frames`` reads."""
    path = Path(path)
    np.savez(path, **frames.data)
    path.with_suffix(".json").write_text(json.dumps({"joint_names": frames.joint_names, "fps": frames.fps}))


def split_episodes(frames: Frames, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame rows of the training and validation episodes; episodes are assigned with ``seed``."""
    ids = frames.episode_ids()
    n_val = int(round(val_fraction * len(ids))) if len(ids) > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and len(ids) > 1 else 0), len(ids) - 1)
    val_ids = np.random.default_rng(seed).permutation(ids)[:n_val]
    is_val = np.isin(frames.data[EPISODE], val_ids)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class WindowSource:
    """Frames as float32 tensors on the training device; ``batch(rows)`` cuts the windows
    ({obs key: (B, H, D), 'action': (B, K, A), 'action_is_pad': (B, K)})."""

    def __init__(self, frames: Frames, keys, history: int, chunk: int, device: torch.device):
        self.keys, self.history, self.chunk = tuple(keys), history, chunk
        self.data = {k: torch.as_tensor(frames.data[k], dtype=torch.float32).to(device) for k in self.keys}
        start, end = frames.episode_bounds()
        self.start = torch.as_tensor(start, dtype=torch.long).to(device)
        self.end = torch.as_tensor(end, dtype=torch.long).to(device)
        self.device = device

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        t = torch.as_tensor(rows, dtype=torch.long).to(self.device)
        obs_idx, act_idx, pad = window_indices(t, self.start[t], self.end[t], self.history, self.chunk)
        out = {k: self.data[k][obs_idx] for k in self.keys if k != ACTION}  # (B, H, D)
        out[ACTION] = self.data[ACTION][act_idx]  # (B, K, A)
        out["action_is_pad"] = pad  # (B, K)
        return out
