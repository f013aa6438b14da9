"""`lam train` and `lam eval`: the learning front door (cores in train.py and evaluate.py).

    lam train --data DIR... --out CKPT [--config FILE] [--steps N] [--device auto]
    torchrun --nproc_per_node 2 -m lam_control.cli train --data DIR... --out CKPT   # data parallel
    lam eval --checkpoint CKPT [CKPT...] --task TASK --episodes N [--seed S] --json
"""
from __future__ import annotations

import json
import logging
import os

from pathlib import Path

import numpy as np
import yaml

from lam_control.reply import Reply
from lam_policy.frames import ACTION, EPISODE, OBSERVATION_KEYS, Frames

log = logging.getLogger(__name__)


def frames_from_folders(dirs: list[str], rate: float, successful_only: bool = True) -> tuple[Frames, dict]:
    """Recorded episodes (folders of rosbag2 episodes, or .npz frame files) -> training frames.
    Failed episodes are left out unless ``successful_only`` is False (behaviour cloning copies
    whatever it is shown); skipped and discarded episodes are reported, never silently lost."""
    from lam_policy.dataset import load_dataset
    from lam_policy.frames import load_npz_frames

    if all(d.endswith(".npz") for d in dirs):
        return Frames.from_dict(*load_npz_frames(dirs)), {"source": "npz", "files": dirs}
    rank = int(os.environ.get("RANK", "0"))
    ds = load_dataset(dirs, rate=rate, cache=rank == 0)  # one writer of the cache under torchrun
    if not ds.episodes:
        raise ValueError(f"no readable episodes in {dirs} (skipped: {ds.skipped})")
    keep = [i for i, e in enumerate(ds.episodes) if e.success or not successful_only]
    if not keep:
        raise ValueError(f"none of the {len(ds.episodes)} episodes in {dirs} succeeded; "
                         "use --all-episodes to train on failed ones too")
    rows = np.isin(ds.arrays[EPISODE], keep)
    data = {k: ds.arrays[k][rows] for k in (*OBSERVATION_KEYS, ACTION, EPISODE) if k in ds.arrays}
    report = {"episodes": len(ds.episodes), "used": len(keep), "frames": int(rows.sum()),
              "skipped": [list(s) for s in ds.skipped], "discarded": len(ds.discarded)}
    return with_tcp(Frames(data, list(ds.joint_names), rate)), report


def with_tcp(frames: Frames) -> Frames:
    """``frames`` plus the derived observation.tcp when the default robot's arm joints are among
    its joints (else unchanged, with a warning: a policy can still use the other features)."""
    from lam_control.robot import RobotConfig
    from lam_policy.features import add_tcp_feature

    try:
        return add_tcp_feature(frames, RobotConfig())
    except ValueError as exc:
        log.warning("observation.tcp not added: %s", exc)
        return frames


def default_observation_keys(frames: Frames) -> list[str]:
    """What a task policy observes unless told otherwise: the joint state and, when the data has
    them, the task's object poses and the TCP feature. Operator keypoints are left out: a task
    policy runs without an operator (motion imitation asks for them with --obs-keys)."""
    from lam_policy.frames import OBJECT_POSES, STATE, TCP

    return [STATE] + [k for k in (OBJECT_POSES, TCP) if k in frames.data]


def default_absolute_action_joints(joint_names: list[str]) -> list[str]:
    """The gripper joints of the robot presets (the project's arm, the Panda) among the action
    joints: an open/close command is learnt as a target even when the arm's actions are offsets
    (PolicyConfig.absolute_action_joints). Another robot's: set it in the config."""
    from lam_control.robot import RobotConfig, panda

    grippers = {*RobotConfig().gripper_joints, *panda().gripper_joints}
    return [j for j in joint_names if j in grippers]


def _train_config(args, frames: Frames):
    from lam_policy.train import TrainConfig

    fields = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"--config {path}: no such file")
        fields = yaml.safe_load(path.read_text()) or {}
        if not isinstance(fields, dict):
            raise ValueError(f"--config {path}: expected a mapping of TrainConfig fields")
    for name in ("policy", "steps", "batch_size", "seed", "device", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    policy_config = fields.setdefault("policy_config", {})
    if not isinstance(policy_config, dict):
        raise ValueError(f"--config {args.config}: policy_config must be a mapping of the policy's fields")
    if args.obs_keys:
        policy_config["observation_keys"] = args.obs_keys
    policy_config.setdefault("observation_keys", default_observation_keys(frames))
    policy_config.setdefault("absolute_action_joints", default_absolute_action_joints(frames.joint_names))
    return TrainConfig(**fields)


def cmd_train(args) -> Reply:
    from lam_policy.train import train

    frames, report = frames_from_folders(args.data, args.rate, not args.all_episodes)
    config = _train_config(args, frames)
    summary = train(frames, args.out, config, resume=not args.no_resume, progress=not args.quiet)
    summary["data"] = report
    summary["observation_keys"] = list(config.policy_config.observation_keys)
    return Reply(out=[json.dumps(summary, indent=2)] if int(os.environ.get("RANK", "0")) == 0 else [])


def cmd_eval(args) -> Reply:
    from lam_control.robot import RobotConfig
    from lam_policy.evaluate import EvalConfig, evaluate
    from lam_policy.policy_base import load_policy

    import torch

    torch.set_num_threads(1)  # as policy_node runs it (see lam_policy.runtime)
    robot = RobotConfig()
    config = EvalConfig(episodes=args.episodes, seed=args.seed, time_limit=args.time_limit or 0.0)
    results, lines = {}, []
    for ckpt in args.checkpoint:
        policy = load_policy(ckpt, expected_joint_names=robot.command_joints, device=args.device)
        result = evaluate(policy, args.task, config, robot)
        result["policy"] = policy.policy_type
        results[ckpt] = result
        lines.append(f"{ckpt} ({policy.policy_type}): success {result['success_rate']:.0%} over "
                     f"{result['episodes']} episodes, mean time {result['mean_episode_time_s']} s, "
                     f"interventions/episode {result['interventions_per_episode']}, inference p99 "
                     f"{result['inference_p99_ms']} ms")
        log.info("evaluated %s (%d of %d)", ckpt, len(results), len(args.checkpoint))  # progress
    if not args.json:
        return Reply(out=lines)
    if not args.per_episode:
        for r in results.values():
            r.pop("per_episode", None)
    return Reply(out=[json.dumps(results if len(results) > 1 else next(iter(results.values())), indent=2)])


def add_learn_parsers(sub) -> None:
    from lam_policy.frames import OBJECT_POSES, STATE

    train = sub.add_parser("train", help="train a policy (ACT or the MLP baseline) on recorded episodes")
    train.add_argument("--data", nargs="+", required=True, help="episode folders (from lam record) or .npz frames")
    train.add_argument("--out", required=True, help="run folder: checkpoints/, and the final policy")
    train.add_argument("--config", help="YAML/JSON of TrainConfig fields (policy_config: {...} for the model)")
    train.add_argument("--policy", choices=("act", "mlp"), help="act (default) or the mlp baseline")
    train.add_argument("--steps", type=int, help="optimisation steps")
    train.add_argument("--batch-size", dest="batch_size", type=int, help="global batch size")
    train.add_argument("--seed", type=int, help="seed (split, init, batches)")
    train.add_argument("--device", help="auto (CUDA when present) | cpu | cuda")
    train.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, help="steps between checkpoints")
    train.add_argument("--obs-keys", nargs="+", help=f"observation features, e.g. {STATE} {OBJECT_POSES}")
    train.add_argument("--rate", type=float, default=30.0, help="Hz, frames resampled from the episodes")
    train.add_argument("--all-episodes", action="store_true", help="also train on episodes that failed")
    train.add_argument("--no-resume", action="store_true", help="start over even if OUT has checkpoints")
    train.add_argument("--quiet", action="store_true", help="no progress line")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="closed-loop rollouts of checkpoints on a sim task, through the safety filter")
    ev.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint folder(s), e.g. the LAM and its MLP baseline")
    ev.add_argument("--task", required=True, help="reach | push | pick_place")
    ev.add_argument("--episodes", type=int, default=20, help="episodes per checkpoint")
    ev.add_argument("--seed", type=int, default=1000, help="first seed (use seeds the demos did not)")
    ev.add_argument("--time-limit", type=float, help="s per episode (default: the task's)")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ev.add_argument("--per-episode", action="store_true", help="include every episode in the JSON")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=cmd_eval)


