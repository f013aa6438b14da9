"""Policy checkpoint folders: safetensors weights + JSON config + JSON normalisation stats.

Layout of a checkpoint folder (``save_checkpoint`` / ``read_checkpoint``)::

    model.safetensors   the weights (safetensors.torch), nothing else
    config.json         format_version, policy_type, config, joint_names, fps, features,
                        weights_sha256, stats_sha256
    stats.json          per-feature mean/std used to normalise inputs and actions

Nothing here unpickles anything: weights are safetensors, everything else is JSON. A read checks
that the files are present, that the JSON parses, the format version, the policy type and the
sha256 of the weights and stats files, and raises ``CheckpointError`` with a one-line message that
names the offending file. Shapes and joint names are checked by the policy (``policy_base``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATS_FILE = "stats.json"
CHECKPOINT_FILES = (WEIGHTS_FILE, CONFIG_FILE, STATS_FILE)


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the file and what is wrong."""


@dataclass
class CheckpointFiles:
    """The parsed contents of a checkpoint folder, integrity already verified."""

    directory: Path
    meta: dict  # config.json
    stats: dict  # stats.json
    state_dict: dict[str, torch.Tensor]  # model.safetensors, on CPU


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON to ``path`` via a temporary file and rename, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, what: str | None = None) -> dict:
    """Parse a JSON object from ``path``; any failure is a CheckpointError naming the file."""
    name = what or path.name
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{name}: missing in {path.parent}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{name}: not readable JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{name}: expected a JSON object, got {type(obj).__name__}")
    return obj


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> str:
    """Save a flat name -> tensor dict as safetensors (CPU, contiguous); returns its sha256."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    return sha256_file(path)


def load_tensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file to CPU after checking its sha256 (when given)."""
    if not path.is_file():
        raise CheckpointError(f"{path.name}: missing in {path.parent}")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise CheckpointError(f"{path.name}: sha256 {actual[:16]}... does not match the recorded "
                                  f"{str(expected_sha256)[:16]}...; the file was modified or corrupted")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name}: not a readable safetensors file ({exc})") from None


def save_checkpoint(directory: str | os.PathLike, *, policy_type: str, config: dict, joint_names: list[str],
                    fps: float, features: dict[str, int], state_dict: dict[str, torch.Tensor],
                    stats: dict) -> Path:
    """Write a checkpoint folder (created if needed); weights and stats first, config.json last,
    so a folder with a config.json is always complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_sha = save_tensors(directory / WEIGHTS_FILE, state_dict)
    write_json_atomic(directory / STATS_FILE, stats)
    meta = {
        "format_version": FORMAT_VERSION,
        "policy_type": policy_type,
        "config": config,
        "joint_names": list(joint_names),
        "fps": float(fps),
        "features": {k: [int(v)] for k, v in features.items()},
        "weights_sha256": weights_sha,
        "stats_sha256": sha256_file(directory / STATS_FILE),
    }
    write_json_atomic(directory / CONFIG_FILE, meta)
    return directory


def read_checkpoint(directory: str | os.PathLike, expected_policy_type: str | None = None) -> CheckpointFiles:
    """Read and verify a checkpoint folder: files present, JSON valid, format version, policy type,
    and the sha256 of model.safetensors and stats.json."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint folder (does not exist)")
    missing = [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(f"{missing[0]}: missing in {directory} (a checkpoint needs {', '.join(CHECKPOINT_FILES)})")
    meta = read_json(directory / CONFIG_FILE)
    for key in ("format_version", "policy_type", "config", "joint_names", "fps", "features", "weights_sha256"):
        if key not in meta:
            raise CheckpointError(f"{CONFIG_FILE}: no '{key}' field; not a lam_policy checkpoint")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{CONFIG_FILE}: format_version {meta['format_version']!r}, this code reads "
                              f"{FORMAT_VERSION}")
    if expected_policy_type is not None and meta["policy_type"] != expected_policy_type:
        raise CheckpointError(f"{CONFIG_FILE}: policy_type {meta['policy_type']!r}, expected "
                              f"{expected_policy_type!r}; load it with lam_policy.policy_base.load_policy")
    if "stats_sha256" in meta and sha256_file(directory / STATS_FILE) != meta["stats_sha256"]:
        raise CheckpointError(f"{STATS_FILE}: sha256 does not match config.json; the file was modified")
    stats = read_json(directory / STATS_FILE)
    state_dict = load_tensors(directory / WEIGHTS_FILE, meta["weights_sha256"])
    return CheckpointFiles(directory, meta, stats, state_dict)


def check_joint_names(saved: list[str], expected: list[str] | None) -> None:
    """Joint names are matched by name: the robot's list must equal the checkpoint's."""
    if expected is None or list(saved) == list(expected):
        return
    hint = " (same joints, different order)" if sorted(saved) == sorted(expected) else ""
    raise CheckpointError(f"{CONFIG_FILE}: joint names do not match the robot's{hint}: checkpoint "
                          f"{list(saved)} vs robot {list(expected)}")
