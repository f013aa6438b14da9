"""``lam dataset``: info, recover, export-lerobot, mimic. Registered by lam_control.cli via add_dataset_parser."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lam_control.reply import Reply
from lam_control.recorder import RecoveryError, recover
from lam_control.replay import EpisodeError


def add_dataset_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``dataset`` and its subcommands on an argparse subparsers object."""
    dataset = subparsers.add_parser("dataset", help="recorded episodes: figures, crash recovery, LeRobot export")
    sub = dataset.add_subparsers(dest="dataset_command", required=True)

    info = sub.add_parser("info", help="episodes, frames, success rate, durations, tasks, skipped episodes")
    info.add_argument("dirs", nargs="+", metavar="DIR", help="folders of episodes (or episode folders)")
    info.add_argument("--rate", type=float, default=30.0, help="frame rate in Hz for the frame count")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    rec = sub.add_parser("recover", help="rebuild episodes a killed recorder left unfinalised")
    rec.add_argument("path", metavar="EPISODE_OR_DIR", help="an episode folder, or a folder of episodes")
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.set_defaults(func=cmd_recover)

    exp = sub.add_parser("export-lerobot", help="write a LeRobotDataset v3.0 (state-only)")
    exp.add_argument("dir", metavar="DIR", help="folder of episodes")
    exp.add_argument("out", metavar="OUT", help="output folder (must be empty or absent)")
    exp.add_argument("--rate", type=float, default=30.0, help="frames per second (integer for LeRobot)")
    exp.add_argument("--repo-id", default="lam/episodes", help="dataset name for the card")
    exp.add_argument("--robot-type", default="lam_arm", help="robot_type in meta/info.json")
    exp.set_defaults(func=cmd_export)

    mim = sub.add_parser("mimic", help="motion-imitation training frames from mocap clips and the offline teacher")
    mim.add_argument("--clips", nargs="+", metavar="CLIP", help="mocap clips (default: every clip in pybullet_data)")
    mim.add_argument("--out", required=True, metavar="FILE.npz",
                     help="output .npz (+ .json metadata), for lam train --data")
    mim.add_argument("--variants", type=int, default=10,
                     help="perturbation draws per clip and speed (the first is unperturbed)")
    mim.add_argument("--speeds", type=float, nargs="+", default=[0.75, 1.0], help="playback speeds")
    mim.add_argument("--loops", type=int, default=3, help="clip repetitions per episode")
    mim.add_argument("--seed", type=int, default=0, help="seed of the perturbations and state noise")
    mim.add_argument("--dagger", metavar="CKPT",
                     help="instead: run this motion-imitation checkpoint closed loop on each clip, speed and "
                          "variant, and label the states it reaches with the teacher (DAgger; train on both files)")
    mim.add_argument("--json", action="store_true", help="print a JSON report")
    mim.set_defaults(func=cmd_mimic)
    return dataset


def _fail(args, exc: Exception) -> Reply:
    return Reply(2, err=[f"lam dataset {args.dataset_command}: error: {exc}"])


def cmd_info(args) -> Reply:
    from lam_policy.dataset import info
    try:
        figures = info(args.dirs, rate=args.rate)
    except ValueError as exc:
        return _fail(args, exc)
    if args.json:
        return Reply(out=[json.dumps(figures, indent=2)])
    return Reply(out=[
        f"episodes        {figures['episodes']}  ({figures['frames']} frames at {figures['rate_hz']:g} Hz)",
        f"success rate    {figures['success_rate']:.0%}",
        f"duration        {figures['total_duration_s']:.1f} s total, {figures['mean_duration_s']:.1f} s mean",
        f"tasks           {', '.join(f'{t} ({n})' for t, n in figures['tasks'].items()) or '-'}",
        f"joints          {', '.join(figures['joint_names']) or '-'}",
        f"discarded       {len(figures['discarded'])}",
        f"skipped         {len(figures['skipped'])}",
        *(f"  {item['name']}: {item['reason']}" for item in figures["skipped"])])


def _episode_dirs(path: Path) -> list[Path]:
    if any(path.glob("*.mcap")) or any(path.glob("*.mcap.orig")) or (path / "metadata.yaml").exists():
        return [path]
    return [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")
            and (any(p.glob("*.mcap")) or any(p.glob("*.mcap.orig")))]


def cmd_recover(args) -> Reply:
    path = Path(args.path)
    if not path.is_dir():
        return _fail(args, ValueError(f"{path} is not a folder"))
    reports, errors = [], []
    for folder in _episode_dirs(path):
        try:
            reports.append(recover(folder).to_dict())
        except (RecoveryError, EpisodeError, OSError) as exc:
            errors.append({"episode": folder.name, "error": str(exc)})
    if not reports and not errors:
        return _fail(args, ValueError(f"no episode folders in {path}"))
    code = 2 if errors else 0
    if args.json:
        return Reply(code, out=[json.dumps({"episodes": reports, "errors": errors}, indent=2)])
    out = []
    for r in reports:
        if r["action"] == "nothing to do":
            out.append(f"{r['episode']}: nothing to do (finalised)")
            continue
        counts = ", ".join(f"{t} {n}" for t, n in r["messages"].items() if n)
        out.append(f"{r['episode']}: recovered {r['span_s']:.2f} s ({counts}); dropped {r['bytes_dropped']} bytes; "
                   f"original kept as {Path(r['original']).name}")
    return Reply(code, out=out, err=[f"{e['episode']}: error: {e['error']}" for e in errors])


def cmd_export(args) -> Reply:
    from lam_policy.dataset import load_dataset
    from lam_policy.lerobot_export import export_lerobot
    try:
        ds = load_dataset([args.dir], rate=args.rate)
        info = export_lerobot(ds, args.out, repo_id=args.repo_id, robot_type=args.robot_type)
    except ValueError as exc:
        return _fail(args, exc)
    return Reply(out=[f"wrote LeRobotDataset {info['codebase_version']} to {args.out}: {info['total_episodes']} "
                      f"episodes, {info['total_frames']} frames at {info['fps']} fps"
                      + (f"; skipped {len(ds.skipped)}: " + ", ".join(n for n, _ in ds.skipped) if ds.skipped else "")])


def cmd_mimic(args) -> Reply:
    import logging

    from lam_policy.frames import save_frames_npz
    from lam_policy.motion_data import MimicDataConfig, build_mimic_frames

    if not getattr(args, "verbose", False):  # the cleaner logs every rejected noisy frame: thousands here
        logging.getLogger("lam_capture.filters").setLevel(logging.WARNING)
    out = Path(args.out)
    if out.suffix != ".npz":
        return _fail(args, ValueError(f"--out must end in .npz (lam train --data reads it), got {out}"))
    try:
        fields = {"variants": args.variants, "speeds": args.speeds, "loops": args.loops, "seed": args.seed}
        if args.clips:
            fields["clips"] = args.clips
        config = MimicDataConfig(**fields)
        if args.dagger:
            from lam_control.robot import RobotConfig
            from lam_policy.motion_dagger import build_dagger_frames
            from lam_policy.policy_base import load_policy
            policy = load_policy(args.dagger, RobotConfig().command_joints, device="cpu")
            frames, report = build_dagger_frames(policy, config)
        else:
            frames, report = build_mimic_frames(config)
    except ValueError as exc:  # SourceError (an unknown clip) and CheckpointError are ValueErrors
        return _fail(args, exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_frames_npz(out, frames)
    report["out"] = str(out)
    if args.json:
        return Reply(out=[json.dumps(report, indent=2)])
    return Reply(out=[f"wrote {report['frames']} frames in {report['episodes']} episodes at {report['fps']:g} Hz "
                      f"from {len(report['clips'])} clip(s) to {out} (+ {out.with_suffix('.json').name})"])
