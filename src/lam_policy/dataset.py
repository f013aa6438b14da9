"""Episodes -> time-aligned arrays at a fixed rate, for training and for LeRobot export.

Each episode is resampled on its own clock, from its start event to its end event (a recovered
episode without an end event runs to its last message), at ``rate`` Hz:

- ``observation.state`` (T, J): measured joint positions (rad, m for fingers), by NAME, linearly
  interpolated between /joint_states samples;
- ``action`` (T, J): the applied command in force at that instant (the last one at or before it;
  before the first command the arm holds, so the action is the state);
- ``observation.object_poses`` (T, M*7): x y z qx qy qz qw per task object, last one in force
  (before the first, the first); present only when every loaded episode has the same M objects;
- ``observation.keypoints`` (T, 75*4): x y z confidence per landmark, last one in force (before
  the first: zeros, i.e. confidence 0, the keypoint contract for "not seen"); same rule;
- ``episode_index``, ``frame_index``, ``index`` (T,) int64 and ``timestamp`` (T,) float32 s.

Joint names come from the applied command (arm + gripper joints). Discarded episodes (a discard
event, custom_data, or a ``discarded/`` folder) are excluded and listed; unreadable ones are
reported by name in ``skipped`` and with ``logging.warning``, never silently dropped.

A per-episode cache (``DIR/.cache/<episode>.npz`` + ``.json``, keyed by the episode's file
names, sizes and mtimes and the rate) makes a second load read arrays instead of bags.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lam_control.replay import (EpisodeError, applied_commands, command_names, joint_states, keypoints,
                                object_poses, read_episode, requested_commands)

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"
CACHE_VERSION = 2  # 2: actions are the requested commands
DISCARDED_DIR = "discarded"
OPTIONAL = ("observation.object_poses", "observation.keypoints")


@dataclass
class EpisodeInfo:
    """One loaded episode: where its frames are in the arrays and what it was."""

    name: str
    path: str
    task: str
    seed: int | None
    success: bool
    duration: float  # s, start event to end event
    frames: int
    start: int = 0  # index of its first frame in the dataset arrays
    ended: bool = True  # False for a recovered episode without an end event


@dataclass
class Dataset:
    """Time-aligned frames of many episodes (see the module docstring for the arrays)."""

    arrays: dict[str, np.ndarray]
    episodes: list[EpisodeInfo]
    joint_names: list[str]
    rate: float
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (episode name, reason)
    discarded: list[str] = field(default_factory=list)
    cache_hits: int = 0
    cache_misses: int = 0

    def __len__(self) -> int:
        return len(self.arrays["index"])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    @property
    def object_count(self) -> int:
        a = self.arrays.get("observation.object_poses")
        return 0 if a is None else a.shape[1] // 7

    def episode_frames(self, i: int) -> slice:
        ep = self.episodes[i]
        return slice(ep.start, ep.start + ep.frames)


# ---- one episode ------------------------------------------------------------------------------

def _hold(stamps: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the last sample at or before each t (-1 before the first)."""
    return np.searchsorted(stamps, t, side="right") - 1


def _fill_leading(values: np.ndarray) -> np.ndarray:
    """A joint missing from the first messages takes its first known value there."""
    out = values.copy()
    for j in range(out.shape[1]):
        ok = np.flatnonzero(~np.isnan(out[:, j]))
        if len(ok):
            out[: ok[0], j] = out[ok[0], j]
    return out


def episode_arrays(folder: Path, rate: float) -> tuple[dict[str, np.ndarray], dict]:
    """Resample one episode; (arrays, meta). EpisodeError if it cannot be used."""
    ep = read_episode(folder)
    meta = {"name": ep.name, "path": str(folder), "task": ep.task, "seed": ep.seed, "success": ep.success,
            "discarded": ep.discarded, "ended": ep.ended}
    if ep.discarded:
        return {}, meta
    if ep.start_ns is None:
        raise EpisodeError(f"episode {ep.name}: no start event on /lam/events")
    start, end = ep.start_ns, ep.end_ns
    if end is None or end <= start:
        raise EpisodeError(f"episode {ep.name}: ends ({end} ns) no later than it starts ({start} ns)")
    names = command_names(ep)
    if not ep.messages("/joint_states"):
        raise EpisodeError(f"episode {ep.name}: no /joint_states messages")
    n = int(np.floor((end - start) * rate / 1e9 + 1e-9)) + 1
    t = start + np.round(np.arange(n) * (1e9 / rate)).astype(np.int64)  # (T,) ns on the episode's clock
    st, sq = joint_states(ep, names)
    sq = _fill_leading(sq)
    state = np.stack([np.interp(t, st, sq[:, j]) for j in range(len(names))], axis=1)  # (T, J)
    # The action is the command the operator's side asked for (/lam/joint_command: retargeting's
    # output, as a leader arm's position is in LeRobot), held between commands; the safety filter
    # stays in the loop when a policy replaces the operator. The filtered command
    # (/lam/applied_command) only leads the state by one control tick: a policy imitating it
    # learns to stop wherever the arm is (measured: reach stalled ~2 cm short). Episodes without
    # requests fall back to the applied command.
    action = state.copy()
    source = "/lam/joint_command" if ep.messages("/lam/joint_command") else "/lam/applied_command"
    if ep.messages(source):
        ct, cq = (requested_commands if source == "/lam/joint_command" else applied_commands)(ep, names)
        cq = _fill_leading(cq)
        idx = _hold(ct, t)
        action[idx >= 0] = cq[idx[idx >= 0]]
    arrays = {"observation.state": state.astype(np.float32), "action": action.astype(np.float32),
              "timestamp": (np.arange(n) / rate).astype(np.float32)}
    if ep.messages("/lam/object_poses"):
        pt, poses = object_poses(ep)
        arrays["observation.object_poses"] = poses[np.maximum(_hold(pt, t), 0)].reshape(n, -1).astype(np.float32)
    if ep.messages("/lam/keypoints"):
        kt, kp = keypoints(ep)
        idx = _hold(kt, t)
        out = np.zeros((n, kp.shape[1], 4), dtype=np.float32)  # (T, 75, 4); before the first: confidence 0
        out[idx >= 0] = kp[idx[idx >= 0]]
        arrays["observation.keypoints"] = out.reshape(n, -1)
    meta.update(joint_names=names, duration=(end - start) * 1e-9, frames=n, action_source=source)
    return arrays, meta


# ---- cache ------------------------------------------------------------------------------------

def _cache_key(folder: Path, rate: float) -> dict:
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith("."))
    return {"version": CACHE_VERSION, "rate": float(rate), "files": [list(f) for f in files]}


def _cache_paths(folder: Path) -> tuple[Path, Path]:
    base = folder.parent / CACHE_DIR / folder.name
    return base.with_suffix(".npz"), base.with_suffix(".json")


def _cache_read(folder: Path, key: dict):
    npz, sidecar = _cache_paths(folder)
    try:
        entry = json.loads(sidecar.read_text())
        if entry.get("key") != key:
            return None
        if "error" in entry or entry["meta"].get("discarded"):
            return entry
        with np.load(npz, allow_pickle=False) as data:
            entry["arrays"] = {k: data[k] for k in data.files}
        return entry
    except (OSError, ValueError, KeyError):
        return None


def _cache_write(folder: Path, key: dict, arrays: dict, meta: dict | None, error: str | None) -> None:
    npz, sidecar = _cache_paths(folder)
    try:
        npz.parent.mkdir(exist_ok=True)
        if arrays:
            tmp = npz.with_name(npz.stem + ".tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, npz)
        entry = {"key": key, "meta": meta or {}}
        if error is not None:
            entry["error"] = error
        tmp = sidecar.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, sidecar)
    except OSError as exc:
        log.warning("dataset cache for %s not written (%s); loads stay uncached", folder.name, exc)


def _load_one(folder: Path, rate: float, cache: bool) -> tuple[dict, dict | None, str | None, bool]:
    """(arrays, meta, error, from_cache) for one episode folder."""
    key = _cache_key(folder, rate) if cache and folder.is_dir() else None
    if key is not None:
        entry = _cache_read(folder, key)
        if entry is not None:
            return entry.get("arrays", {}), entry.get("meta"), entry.get("error"), True
    try:
        arrays, meta = episode_arrays(folder, rate)
        error = None
    except EpisodeError as exc:
        arrays, meta, error = {}, None, str(exc)
    if key is not None:
        _cache_write(folder, key, arrays, meta, error)
    return arrays, meta, error, False


# ---- many episodes ----------------------------------------------------------------------------

def _is_episode(path: Path) -> bool:
    return path.is_dir() and ((path / "metadata.yaml").exists() or any(path.glob("*.mcap"))
                              or any(path.glob("*.mcap.orig")) or path.name.startswith("episode_"))


def episode_folders(dirs) -> list[tuple[Path, bool]]:
    """(episode folder, discarded by location) for every episode under ``dirs``, sorted by name."""
    if isinstance(dirs, (str, Path)):
        dirs = [dirs]
    found: list[tuple[Path, bool]] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise ValueError(f"dataset folder {d} does not exist")
        if _is_episode(d) and not any(c.is_dir() and _is_episode(c) for c in d.iterdir()):
            found.append((d, d.parent.name == DISCARDED_DIR))
            continue
        for child in sorted(d.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            if child.name == DISCARDED_DIR:
                found += [(c, True) for c in sorted(child.iterdir()) if _is_episode(c)]
            elif _is_episode(child):
                found.append((child, False))
    return found


def load_dataset(dirs, rate: float = 30.0, cache: bool = True, joint_names: list[str] | None = None) -> Dataset:
    """Load every episode folder under ``dirs`` (folders of episodes, or episode folders)."""
    if rate is None or not (np.isfinite(rate) and rate > 0):
        raise ValueError(f"load_dataset.rate must be a positive frequency in Hz, got {rate!r}")
    ds = Dataset({}, [], list(joint_names or []), float(rate))
    parts: list[dict] = []
    for folder, discarded in episode_folders(dirs):
        if discarded:
            ds.discarded.append(folder.name)
            continue
        arrays, meta, error, hit = _load_one(folder, rate, cache)
        ds.cache_hits += hit
        ds.cache_misses += not hit
        if error is None and meta.get("discarded"):
            ds.discarded.append(folder.name)
            continue
        if error is None:
            error = _match_joints(ds, arrays, meta)
        if error is not None:
            ds.skipped.append((folder.name, error))
            log.warning("dataset: skipping %s: %s", folder.name, error)
            continue
        parts.append(arrays)
        ds.episodes.append(EpisodeInfo(meta["name"], meta["path"], meta["task"], meta["seed"], meta["success"],
                                       round(meta["duration"], 6), meta["frames"], ended=meta["ended"]))
    _assemble(ds, parts)
    return ds


def _match_joints(ds: Dataset, arrays: dict, meta: dict) -> str | None:
    """Reorder an episode's state/action columns to the dataset's joint names (by name)."""
    names = list(meta["joint_names"])
    if not ds.joint_names:
        ds.joint_names = names
    missing = [n for n in ds.joint_names if n not in names]
    if missing:
        return f"joints {missing} not recorded (episode has {names})"
    perm = [names.index(n) for n in ds.joint_names]
    for key in ("observation.state", "action"):
        arrays[key] = arrays[key][:, perm]
    return None


def _assemble(ds: Dataset, parts: list[dict]) -> None:
    j = len(ds.joint_names)
    ds.arrays = {"observation.state": np.zeros((0, j), np.float32), "action": np.zeros((0, j), np.float32)}
    offset = 0
    for ep in ds.episodes:
        ep.start, offset = offset, offset + ep.frames
    for key in ("observation.state", "action", "timestamp"):
        if parts:
            ds.arrays[key] = np.concatenate([p[key] for p in parts])
    ds.arrays.setdefault("timestamp", np.zeros(0, np.float32))
    for key in OPTIONAL:
        widths = {p[key].shape[1] if key in p else None for p in parts}
        if len(widths) == 1 and None not in widths:
            ds.arrays[key] = np.concatenate([p[key] for p in parts])
        elif len(widths) > 1:
            log.warning("dataset: %s left out: not every episode has it with the same width (%s)",
                        key, sorted(widths, key=str))
    ds.arrays["episode_index"] = np.repeat(np.arange(len(ds.episodes), dtype=np.int64),
                                           [e.frames for e in ds.episodes])
    ds.arrays["frame_index"] = (np.concatenate([np.arange(e.frames, dtype=np.int64) for e in ds.episodes])
                                if ds.episodes else np.zeros(0, np.int64))
    ds.arrays["index"] = np.arange(offset, dtype=np.int64)


def info(dirs, rate: float = 30.0, cache: bool = True) -> dict:
    """Figures of a dataset: episodes, frames, success rate, durations, tasks, skipped, discarded."""
    ds = load_dataset(dirs, rate=rate, cache=cache)
    durations = [e.duration for e in ds.episodes]
    tasks: dict[str, int] = {}
    for e in ds.episodes:
        tasks[e.task] = tasks.get(e.task, 0) + 1
    return {
        "episodes": len(ds.episodes),
        "frames": len(ds),
        "rate_hz": ds.rate,
        "success_rate": (sum(e.success for e in ds.episodes) / len(ds.episodes)) if ds.episodes else 0.0,
        "total_duration_s": round(float(sum(durations)), 3),
        "mean_duration_s": round(float(np.mean(durations)), 3) if durations else 0.0,
        "tasks": tasks,
        "joint_names": ds.joint_names,
        "object_count": ds.object_count,
        "keypoints": "observation.keypoints" in ds.arrays,
        "skipped": [{"name": n, "reason": r} for n, r in ds.skipped],
        "discarded": ds.discarded,
        "episode_list": [asdict(e) for e in ds.episodes],
    }
