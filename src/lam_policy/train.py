"""Training core for ACT and MLP policies: seeded, resumable, single- or multi-process.

``train(frames, out_dir, config)`` splits episodes into train/val (seeded), computes the
normalisation stats on the training episodes, and runs AdamW with linear warm-up then cosine
decay on windows (observation history clamped to the episode start, action chunk padded past its
end). Under ``torchrun`` (WORLD_SIZE > 1) it runs distributed data parallel: ``gloo`` on CPU,
``nccl`` on CUDA; every rank draws the same global batch and trains on its own slice; rank 0
validates and writes. Output::

    out/checkpoints/step_NNNNNN/   policy checkpoint + training_state.{safetensors,json}
    out/last                       pointer file: "checkpoints/step_NNNNNN"
    out/model.safetensors, config.json, stats.json   the final policy (load_policy(out))
    out/train_summary.json

Launch: ``torchrun --nproc_per_node 2 -m lam_policy.train --data demos.npz --out runs/a``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as tdist

from lam_policy.act import ACTConfig, ACTPolicy
from lam_policy.checkpoint import CheckpointError
from lam_control.robot import RobotConfig
from lam_policy.features import StateNoise, TcpFeature
from lam_policy.frames import (ACTION, STATE, TCP, Frames, WindowSource, compute_stats, load_npz_frames, relative_action_stats,
                               split_episodes)
from lam_policy.mlp import MLPConfig, MLPPolicy
from lam_policy.policy_base import (BasePolicy, PolicyConfig, check_device_name, relative_action_mask,
                                   resolve_device)
from lam_policy.train_state import (EpochSampler, TrainingState, latest_checkpoint, optimizer_from_flat,
                                    optimizer_to_flat, publish_checkpoint, read_training_state, rng_tensors,
                                    write_training_state)

log = logging.getLogger(__name__)

POLICIES: dict[str, tuple[type[BasePolicy], type[PolicyConfig]]] = {
    "act": (ACTPolicy, ACTConfig), "mlp": (MLPPolicy, MLPConfig)}
# Fields that change the optimisation: a resumed run must use the same values.
RESUME_FIELDS = ("policy", "policy_config", "steps", "batch_size", "lr", "weight_decay", "warmup_steps",
                 "min_lr_ratio", "grad_clip", "val_fraction", "seed", "state_noise", "state_noise_fraction",
                 "state_noise_joints")


@dataclass
class TrainConfig:
    """Training hyper-parameters. ``batch_size`` is global (split across ranks); an ``*_every`` of
    0 means only at the end."""

    policy: str = "act"  # act | mlp
    policy_config: PolicyConfig | dict | None = None  # None = the policy's defaults
    # Defaults measured on 50 scripted demos per sim task (small ACT, one core: ~9-10 min). 16000
    # rather than 8000 steps: push 90% vs 82%, pick_place 80% vs 73% over 60 unseen seeds (README).
    steps: int = 16000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    grad_clip: float = 10.0  # max gradient norm; 0 = off
    val_fraction: float = 0.1  # of episodes, chosen with the seed
    val_every: int = 200
    val_max_frames: int = 2048
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0  # windows are gathered from in-memory tensors; no loader workers
    # Augmentation (features.StateNoise): this fraction of the training windows see their state
    # history shifted by N(0, state_noise) rad per joint, targets unchanged, so the policy learns
    # to steer back instead of drifting. Measured on reach (50 demos, ACT, 8000 steps): 85% / 100%
    # success (eval seeds 1000 / 2000) without it, 100% / 100% with 0.02 on half the windows.
    # state_noise_joints: [] = every state joint but absolute_action_joints (the gripper's).
    state_noise: float = 0.02
    state_noise_fraction: float = 0.5
    state_noise_joints: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None and f.name != "policy_config":
                raise ValueError(f"TrainConfig.{f.name} is None")
        if self.policy not in POLICIES:
            raise ValueError(f"TrainConfig.policy must be one of {sorted(POLICIES)}, got {self.policy!r}")
        config_class = POLICIES[self.policy][1]
        if self.policy_config is None:
            self.policy_config = config_class()
        elif isinstance(self.policy_config, dict):
            self.policy_config = config_class.from_dict(self.policy_config)
        if type(self.policy_config) is not config_class:
            raise ValueError(f"TrainConfig.policy_config must be a {config_class.__name__} for policy "
                             f"{self.policy!r}, got {type(self.policy_config).__name__}")
        for name, low in (("steps", 1), ("batch_size", 1), ("warmup_steps", 0), ("val_every", 0),
                          ("val_max_frames", 1), ("checkpoint_every", 0), ("log_every", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"TrainConfig.{name} must be an integer >= {low}, got {value!r}")
        for name, low, high in (("lr", 0.0, math.inf), ("weight_decay", 0.0, math.inf), ("min_lr_ratio", 0.0, 1.0),
                                ("grad_clip", 0.0, math.inf), ("val_fraction", 0.0, 0.9),
                                ("state_noise", 0.0, math.inf), ("state_noise_fraction", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"TrainConfig.{name} must be a number in [{low}, {high}], got {value!r}")
        if not isinstance(self.state_noise_joints, (list, tuple)) or \
                not all(isinstance(j, str) for j in self.state_noise_joints):
            raise ValueError(f"TrainConfig.state_noise_joints must be a list of joint names, got "
                             f"{self.state_noise_joints!r}")
        self.state_noise_joints = list(self.state_noise_joints)
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.num_workers != 0:
            raise ValueError(f"TrainConfig.num_workers must be 0 (windows are gathered in memory), "
                             f"got {self.num_workers!r}")
        check_device_name("TrainConfig", self.device)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["policy_config"] = self.policy_config.to_dict()
        return out

    def lr_at(self, step: int) -> float:
        """Learning rate for 0-based ``step``: linear warm-up, then cosine to lr * min_lr_ratio."""
        warmup = min(self.warmup_steps, self.steps - 1)
        if step < warmup:
            return self.lr * (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, self.steps - warmup - 1)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------- distributed


@dataclass
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool = False

    @classmethod
    def setup(cls, device_name: str) -> DistContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = resolve_device(device_name)
        if world <= 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        owns = not tdist.is_initialized()
        if owns:
            tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(tdist.get_rank(), tdist.get_world_size(), device, owns)

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """The same-shaped tensor from every rank (a collective: every rank must call it)."""
        if self.world == 1:
            return [tensor]
        on = tensor.to(self.device if tdist.get_backend() == "nccl" else "cpu")
        out = [torch.empty_like(on) for _ in range(self.world)]
        tdist.all_gather(out, on)
        return [t.cpu() for t in out]

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def teardown(self) -> None:
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()


# ----------------------------------------------------------------------------- progress


class ProgressLine:
    """One status line on stderr: redrawn in place on a terminal, a line every few seconds in a log."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else 10.0
        self._last = -math.inf

    def update(self, step: int, force: bool = False, **fields) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.interval):
            return
        self._last = now
        parts = [f"step {step}/{self.total}"]
        for name, value in fields.items():
            if value is not None:
                parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
        line = "  ".join(parts)
        self.stream.write(f"\r{line:<100}" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate(policy: BasePolicy, source: WindowSource, rows: np.ndarray, config: TrainConfig) -> dict | None:
    """Mean loss/l1 over (at most val_max_frames evenly spaced) validation rows, in eval mode."""
    if len(rows) == 0:
        return None
    if len(rows) > config.val_max_frames:
        rows = rows[np.linspace(0, len(rows) - 1, config.val_max_frames).astype(int)]
    was_training = policy.training
    policy.eval()
    totals: dict[str, float] = {}
    for i in range(0, len(rows), config.batch_size):
        part = rows[i:i + config.batch_size]
        _, logs = policy(source.batch(part))
        for k, v in logs.items():
            totals[k] = totals.get(k, 0.0) + v * len(part)
    policy.train(was_training)
    return {k: v / len(rows) for k, v in totals.items()}


def state_noise(config: TrainConfig, pc: PolicyConfig, joint_names: list[str], keys) -> StateNoise | None:
    """The run's state-noise augmentation, or None when off (state_noise 0 or no state observed).
    observation.tcp is recomputed with the default robot's kinematics, as lam train derives it."""
    if config.state_noise <= 0 or config.state_noise_fraction <= 0 or STATE not in keys:
        return None
    absolute = set(pc.absolute_action_joints)
    joints = list(config.state_noise_joints) or [j for j in joint_names if j not in absolute]
    tcp = TcpFeature(RobotConfig(), joint_names) if TCP in keys else None
    return StateNoise(joint_names, joints, config.state_noise, config.state_noise_fraction, tcp)


class Trainer:
    """One run of ``train``: the policy, optimizer, sampler and what to save."""

    def __init__(self, frames: Frames, out_dir: Path, config: TrainConfig, dist: DistContext,
                 state: TrainingState | None):
        self.frames, self.out_dir, self.config, self.dist = frames, out_dir, config, dist
        pc = dataclasses.replace(config.policy_config, device=str(dist.device))
        self.keys = (*pc.observation_keys, ACTION)
        self.train_rows, self.val_rows = split_episodes(frames, config.val_fraction, config.seed)
        if state:
            stats = state.meta["stats"]
        else:
            stats = compute_stats(frames, self.keys, self.train_rows, pc.std_floor)
            if pc.relative_actions:
                stats[ACTION] = relative_action_stats(frames, self.train_rows, pc.chunk, pc.std_floor,
                                                      relative_action_mask(pc, frames.joint_names))
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        policy_class = POLICIES[config.policy][0]
        self.policy = policy_class(pc, frames.feature_dims(self.keys), frames.joint_names, frames.fps, stats).train()
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sampler = EpochSampler(self.train_rows, config.seed)
        self.source = WindowSource(frames, self.keys, pc.history, pc.chunk, dist.device)
        self.augment = state_noise(config, pc, frames.joint_names, self.keys)
        self.step, self.history = 0, []
        torch.manual_seed(config.seed * 1000 + 1 + dist.rank)  # dropout / VAE noise differ per rank
        if state:
            self._restore(state)
        self.model = self.policy
        if dist.world > 1:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.policy, device_ids=ids)

    def data_signature(self) -> dict:
        return {"frames": len(self.frames), "episodes": int(len(self.frames.episode_ids())),
                "features": self.frames.feature_dims(self.keys), "joint_names": self.frames.joint_names}

    def _restore(self, state: TrainingState) -> None:
        saved = state.meta["train_config"]
        now = self.config.to_dict()
        defaults = TrainConfig().to_dict()  # a field a run saved before it existed had its default
        changed = [k for k in RESUME_FIELDS if k != "policy_config" and saved.get(k, defaults[k]) != now[k]]
        saved_pc = {k: v for k, v in saved.get("policy_config", {}).items() if k != "device"}
        if saved_pc != {k: v for k, v in now["policy_config"].items() if k != "device"}:
            changed.append("policy_config")
        if changed:
            raise CheckpointError(f"training_state.json: cannot resume from {state.directory}: {changed} differ "
                                  f"from this run's config; use a new --out or resume=False")
        if state.meta.get("data") != self.data_signature():
            raise CheckpointError(f"training_state.json: the data differ from the run being resumed "
                                  f"({state.meta.get('data')} vs {self.data_signature()})")
        resumed = BasePolicy.load(state.directory, self.frames.joint_names, device=str(self.dist.device))
        self.policy.load_state_dict(resumed.state_dict())
        optimizer_from_flat(self.optimizer, state.tensors, state.meta["optimizer"])
        self.sampler.load_state(state.meta["sampler"])
        self.step, self.history = int(state.meta["step"]), list(state.meta.get("history", []))
        cpu_rng = state.rng("cpu", self.dist.rank) if state.meta.get("world_size") == self.dist.world else None
        if cpu_rng is None:
            log.warning("resuming with a different world size: RNG streams restart from the seed")
        else:
            torch.set_rng_state(cpu_rng)
            cuda_rng = state.rng("cuda", self.dist.rank)
            if cuda_rng is not None and self.dist.device.type == "cuda":
                torch.cuda.set_rng_state(cuda_rng, self.dist.device)
        log.info("resumed from %s at step %d", state.directory, self.step)

    def train_step(self) -> dict[str, float]:
        cfg, per_rank = self.config, self.config.batch_size // self.dist.world
        rows = self.sampler.next(cfg.batch_size)[self.dist.rank * per_rank:(self.dist.rank + 1) * per_rank]
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(self.step)
        batch = self.source.batch(rows)
        loss, logs = self.model(self.augment(batch) if self.augment else batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        return logs

    def save(self) -> Path | None:
        """Checkpoint at the current step (a collective; rank 0 writes)."""
        cpu = self.dist.gather(torch.get_rng_state())
        cuda = self.dist.gather(torch.cuda.get_rng_state(self.dist.device)) if self.dist.device.type == "cuda" else None
        if self.dist.rank != 0:
            return None
        name = f"step_{self.step:06d}"
        tmp = self.out_dir / "checkpoints" / f".{name}.tmp"
        self.policy.save(tmp)
        opt_tensors, opt_meta = optimizer_to_flat(self.optimizer)
        meta = {"step": self.step, "sampler": self.sampler.state(), "optimizer": opt_meta,
                "train_config": self.config.to_dict(), "world_size": self.dist.world, "data": self.data_signature(),
                "stats": self.policy.normaliser.to_json(), "history": self.history}
        write_training_state(tmp, {**opt_tensors, **rng_tensors(cpu, cuda)}, meta)
        final = publish_checkpoint(self.out_dir, tmp, name)
        log.info("checkpoint %s", final)
        return final


def _check_world(config: TrainConfig, dist: DistContext) -> None:
    if config.batch_size % dist.world:
        raise ValueError(f"TrainConfig.batch_size ({config.batch_size}) must be divisible by the number of "
                         f"processes ({dist.world})")


def train(frames, out_dir, config: TrainConfig, resume: bool = True, progress: bool = True,
          until: int | None = None) -> dict:
    """Train a policy on ``frames`` (a Frames or the reader's (arrays, metadata) pair) into
    ``out_dir``; resumes from ``out_dir/last`` when ``resume``. ``until`` stops after that global
    step with a checkpoint (a time-sliced job; the schedule still spans ``config.steps``).
    Returns {steps, train_loss, val_loss, val_l1, samples_per_s, wall_s, world_size, resumed_from}."""
    if config is None:
        raise ValueError("train: config is None")
    frames = frames if isinstance(frames, Frames) else Frames.from_dict(*frames)
    out_dir = Path(out_dir)
    dist = DistContext.setup(config.device)
    devices = [dist.device] if dist.device.type == "cuda" else []
    try:
        _check_world(config, dist)
        with torch.random.fork_rng(devices=devices):  # leave the caller's RNG untouched
            return _run(frames, out_dir, config, dist, resume, progress, until)
    finally:
        dist.teardown()


def _run(frames: Frames, out_dir: Path, config: TrainConfig, dist: DistContext, resume: bool, progress: bool,
         until: int | None) -> dict:
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(out_dir) if resume else None
    trainer = Trainer(frames, out_dir, config, dist, read_training_state(last) if last else None)
    resumed_from = trainer.step if last else None
    stop = min(config.steps, until) if until is not None else config.steps
    bar = ProgressLine(config.steps, enabled=progress and dist.rank == 0)
    val, recent, train_time, samples = None, [], 0.0, 0
    while trainer.step < stop:
        t0 = time.perf_counter()
        logs = trainer.train_step()
        train_time += time.perf_counter() - t0
        samples += config.batch_size
        recent = (recent + [logs["loss"]])[-config.log_every:]
        step = trainer.step
        if dist.rank == 0 and config.val_every and step % config.val_every == 0:
            val = evaluate(trainer.policy, trainer.source, trainer.val_rows, config)
        if step % config.log_every == 0 or step == stop:
            trainer.history.append({"step": step, "loss": float(np.mean(recent)), "val_loss": val and val["loss"]})
        bar.update(step, force=step == stop, loss=float(np.mean(recent)), val=val and val["loss"],
                   lr=config.lr_at(step - 1), samples_s=round(samples / max(train_time, 1e-9)))
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step != stop:
            trainer.save()
    bar.close()
    if dist.rank == 0 and trainer.val_rows.size:
        val = evaluate(trainer.policy, trainer.source, trainer.val_rows, config)
    trainer.save()
    if dist.rank == 0 and trainer.step >= config.steps:
        trainer.policy.save(out_dir)
    summary = {"steps": trainer.step, "train_loss": float(np.mean(recent)) if recent else None,
               "val_loss": val and val["loss"], "val_l1": val and val["l1"],
               "samples_per_s": samples / train_time if train_time else 0.0, "wall_s": train_time,
               "world_size": dist.world, "resumed_from": resumed_from, "out_dir": str(out_dir)}
    if dist.rank == 0:
        (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    dist.barrier()
    return summary


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lam_policy.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="frames: .npz files with <stem>.json metadata")
    p.add_argument("--out", required=True, help="run folder (checkpoints, final policy)")
    p.add_argument("--policy", default="act", choices=sorted(POLICIES))
    p.add_argument("--obs-keys", nargs="+", default=None, help="observation features (state always)")
    p.add_argument("--history", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--policy-config", default=None, help="JSON object of further policy config fields")
    for name, kind in (("steps", int), ("batch-size", int), ("lr", float), ("weight-decay", float),
                       ("warmup-steps", int), ("grad-clip", float), ("val-fraction", float), ("val-every", int),
                       ("checkpoint-every", int), ("log-every", int), ("seed", int)):
        p.add_argument(f"--{name}", type=kind, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--until", type=int, default=None, help="stop after this step (resume later)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    pc = json.loads(args.policy_config) if args.policy_config else {}
    for key, value in (("observation_keys", args.obs_keys), ("history", args.history), ("chunk", args.chunk)):
        if value is not None:
            pc[key] = value
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if hasattr(args, f.name) and getattr(args, f.name) is not None and f.name != "policy_config"}
    return TrainConfig(**fields, policy_config=pc or None)


def main_from_args(argv: list[str] | None = None,
                   load_frames: Callable[[list[str]], tuple[dict, dict]] = load_npz_frames) -> int:
    """Command-line training (what torchrun launches); ``load_frames(paths) -> (arrays, meta)``
    reads the data. Prints the summary JSON on rank 0; returns an exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = config_from_args(args)
        frames = Frames.from_dict(*load_frames(args.data))
        summary = train(frames, args.out, config, resume=not args.no_resume, progress=not args.quiet, until=args.until)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"lam_policy.train: {exc}\n")
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_from_args())
