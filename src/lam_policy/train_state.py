"""Resumable training state as safetensors + JSON, never pickle.

A training checkpoint is a policy checkpoint folder (loadable with ``load_policy``) plus
``training_state.safetensors`` (optimizer tensors as ``optimizer.state.<param>.<name>`` and the
torch RNG state of every rank) and ``training_state.json`` (step, sampler position, optimizer
param groups and scalar state, the training config, the data's shape and the sha256 of the
tensors file). ``<out>/last`` is a one-line pointer file naming the newest checkpoint folder.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lam_policy.checkpoint import CheckpointError, read_json, save_tensors, load_tensors, write_json_atomic

log = logging.getLogger(__name__)

STATE_TENSORS, STATE_JSON, LAST_POINTER = "training_state.safetensors", "training_state.json", "last"
_OPT_PREFIX, _RNG_PREFIX = "optimizer.state.", "rng."


class EpochSampler:
    """Global batches of training rows: a fresh seeded permutation per epoch, batches running
    across epoch boundaries. Every rank draws the same global batch and takes its own slice, so
    the data order does not depend on the number of processes. State: (epoch, offset)."""

    def __init__(self, rows: np.ndarray, seed: int):
        if len(rows) == 0:
            raise ValueError("EpochSampler: no training rows (every episode went to validation?)")
        self.rows, self.seed = np.asarray(rows), int(seed)
        self.epoch, self.offset = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> np.ndarray:
        return self.rows[np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))]

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` frame indices."""
        out = []
        while n > 0:
            take = min(n, len(self._perm) - self.offset)
            out.append(self._perm[self.offset:self.offset + take])
            self.offset, n = self.offset + take, n - take
            if self.offset == len(self._perm):
                self.epoch, self.offset = self.epoch + 1, 0
                self._perm = self._permutation()
        return np.concatenate(out)

    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        self._perm = self._permutation()


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (flat tensors for safetensors, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{_OPT_PREFIX}{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of ``optimizer_to_flat``: load the state into ``optimizer``."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(_OPT_PREFIX):
            pid, name = key[len(_OPT_PREFIX):].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_tensors(all_ranks: list[torch.Tensor], cuda_ranks: list[torch.Tensor] | None) -> dict[str, torch.Tensor]:
    out = {f"{_RNG_PREFIX}cpu.{r}": t for r, t in enumerate(all_ranks)}
    for r, t in enumerate(cuda_ranks or []):
        out[f"{_RNG_PREFIX}cuda.{r}"] = t
    return out


@dataclass
class TrainingState:
    """What a run needs to continue: read back from a checkpoint folder."""

    directory: Path
    meta: dict  # training_state.json
    tensors: dict[str, torch.Tensor]

    def rng(self, kind: str, rank: int) -> torch.Tensor | None:
        return self.tensors.get(f"{_RNG_PREFIX}{kind}.{rank}")


def write_training_state(directory: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    sha = save_tensors(directory / STATE_TENSORS, tensors)
    write_json_atomic(directory / STATE_JSON, {**meta, "tensors_sha256": sha})


def publish_checkpoint(out_dir: Path, tmp_dir: Path, name: str) -> Path:
    """Move a fully written checkpoint folder into out/checkpoints/<name> and point out/last at it."""
    final = out_dir / "checkpoints" / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp_dir, final)
    pointer = out_dir / LAST_POINTER
    tmp = pointer.with_name(pointer.name + ".tmp")
    tmp.write_text(f"checkpoints/{name}\n")
    os.replace(tmp, pointer)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The folder ``out/last`` points at, or None when there is no pointer."""
    pointer = out_dir / LAST_POINTER
    if not pointer.is_file():
        return None
    target = out_dir / pointer.read_text().strip()
    if not target.is_dir():
        raise CheckpointError(f"{LAST_POINTER}: points at {target}, which does not exist")
    return target


def read_training_state(directory: Path) -> TrainingState:
    meta = read_json(directory / STATE_JSON)
    for key in ("step", "sampler", "optimizer", "train_config", "tensors_sha256"):
        if key not in meta:
            raise CheckpointError(f"{STATE_JSON}: no '{key}' field in {directory}")
    tensors = load_tensors(directory / STATE_TENSORS, meta["tensors_sha256"])
    return TrainingState(directory, meta, tensors)
