"""`lam`: the command line front door (run, demo, bench)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib import import_module
from pathlib import Path

import numpy as np

from lam_control.reply import Reply

log = logging.getLogger("lam")

NODES = {  # name in --nodes: (module, class, default parameter file)
    "control": ("lam_control.control_node", "ControlNode", "config/control.yaml"),
    "capture": ("lam_capture.capture_node", "CaptureNode", "config/capture.yaml"),
    "policy": ("lam_policy.policy_node", "PolicyNode", "config/policy.yaml"),
    "record": ("lam_control.record_node", "RecordNode", "config/record.yaml"),
}
PLANNED_NODES: set[str] = set()  # accepted names whose nodes arrive with later issues


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _default_params(nodes=("control",)) -> list[str]:
    """The package's parameter files for these nodes (what the launch files load)."""
    from lam_control.resources import share_file

    return [str(share_file(NODES[n][2])) for n in nodes]


def _control_backend(params: list[str]) -> str:
    """control_node's ``backend`` as these parameter files set it (the last one wins; default sim)."""
    import yaml

    from lam_control.ros_graph import check_params_file

    backend = "sim"
    for path in params:  # check_params_file: a missing or malformed file is a GraphError here
        section = yaml.safe_load(check_params_file(path).read_text()).get("control_node")
        backend = section["ros__parameters"].get("backend", backend) if section else backend
    return str(backend)


def _graph_domain(args, params: list[str]) -> dict:
    """Graph keyword arguments for a command whose nodes all run in this process: ``--domain N``
    when given; the environment's ROS_DOMAIN_ID when control_node drives a physical arm (it must
    reach the robot's graph); otherwise a private domain, so that the run neither sends commands
    to another graph's control node nor mixes that graph's messages into its own."""
    domain = getattr(args, "domain", None)
    if domain is not None:
        if not 0 <= domain <= 232:
            raise CLIError(f"--domain must be a ROS domain id in 0-232, got {domain}")
        return {"domain_id": domain}
    return {} if _control_backend(params) == "ros2_control" else {"private": True}


def _parse_nodes(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CLIError("--nodes needs at least one of: " + ", ".join(NODES))
    for name in names:
        if name in PLANNED_NODES:
            raise CLIError(f"node {name!r} is not part of this release yet; available: {', '.join(NODES)}")
        if name not in NODES:
            raise CLIError(f"unknown node {name!r}; choose from: {', '.join(NODES)}")
    return names


def cmd_run(args) -> int:
    from lam_control.ros_graph import Graph

    from rclpy.parameter import Parameter

    names = _parse_nodes(args.nodes)
    params = args.params or _default_params(names)
    if args.duration is not None and not args.duration > 0:
        raise CLIError(f"--duration must be > 0 seconds, got {args.duration}")
    if args.source is not None and "capture" not in names:
        raise CLIError("--source needs the capture node in --nodes")
    if args.source is not None:
        from lam_capture.sources import parse_spec

        parse_spec(args.source)  # a malformed spec fails here, before anything starts
    if args.mode == "lam" and not args.checkpoint:
        raise CLIError("--mode lam needs --checkpoint CKPT")
    extra = {"capture": {"source": args.source}, "policy": {"mode": args.mode, "checkpoint": args.checkpoint},
             "control": {"task": args.task}}
    with Graph(params) as graph:
        for name in names:
            module, cls, _ = NODES[name]
            overrides = [Parameter(k, value=v) for k, v in extra.get(name, {}).items() if v]
            graph.add(getattr(import_module(module), cls), parameter_overrides=overrides)
        print(f"lam run: {', '.join(names)} up (domain {os.environ.get('ROS_DOMAIN_ID', '0')}); "
              f"{'Ctrl-C to stop' if args.duration is None else f'for {args.duration:g} s'}", flush=True)
        graph.spin(duration=args.duration, handle_signals=True)
    print("lam run: stopped", flush=True)
    return 0


def cmd_demo(args) -> int:
    from lam_control.control_node import ControlNode
    from lam_control.demo import demo_trajectory, summarize, write_video
    from lam_control.monitor_node import MonitorNode
    from lam_control.player_node import PlayerNode
    from lam_control.ros_graph import Graph

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = args.params or _default_params()
    with Graph(params, **_graph_domain(args, params)) as graph:
        control = graph.add(ControlNode)
        monitor = graph.add(MonitorNode)
        robot = control.arm.robot
        times, positions = demo_trajectory(robot)
        player = graph.add(PlayerNode, joint_names=robot.command_joints, times=times, positions=positions)
        print(f"lam demo: streaming a {times[-1]:.1f} s recorded trajectory through control_node "
              f"({control.backend})", flush=True)
        done_at = []
        graph.spin(duration=times[-1] + 10.0, handle_signals=True,
                   until=lambda: player.done and (done_at or done_at.append(time.monotonic())) and
                   time.monotonic() - done_at[0] > 1.0)
        filt = control.arm.filter
        summary = summarize(control.arm.model, filt.lower, filt.upper, filt.vcap, monitor.states,
                            monitor.applied, robot.command_joints, np.clip(positions[-1], filt.lower, filt.upper),
                            filt.dt)
        summary["interventions"] = {k: v for k, v in control.counts.items() if k not in ("accepted", "rejected")}
        summary["commands_accepted"] = control.counts["accepted"]
        summary["fault"] = filt.fault
    if not args.no_video and monitor.states:
        t0 = monitor.states[0][0]
        idx = [monitor.states[0][1].index(n) for n in robot.command_joints]
        st_t = np.array([t - t0 for t, _, _ in monitor.states])
        st_q = np.array([q[idx] for _, _, q in monitor.states])
        video = out / "demo.mp4"
        summary["video"] = str(video)
        summary["video_frames"] = write_video(robot, st_t, st_q, video)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    ok = summary.get("applied_limit_violations", 1) == 0 and summary.get("applied_nonfinite", 1) == 0 \
        and not summary["fault"] and summary.get("final_error_rad", 1.0) < 0.01
    print(f"lam demo: {'OK' if ok else 'FAILED'} -> {out}", flush=True)
    return 0 if ok else 1


MIMIC_RETARGET_PARAMS = ("arm", "mirror", "robot_shoulder_link", "robot_elbow_link", "scale", "neutral_offset",
                         "robot_reach", "calibration_frames", "orientation", "anchor_decay")


def _mimic_checkpoint(mode: str, checkpoint: str | None) -> None:
    """--mode lam needs a checkpoint that observes the operator (observation.keypoints)."""
    if mode != "lam":
        if checkpoint:
            raise CLIError("--checkpoint is for --mode lam")
        return
    if not checkpoint:
        raise CLIError("--mode lam needs --checkpoint CKPT (a policy trained with observation.keypoints)")
    from lam_policy.checkpoint import CONFIG_FILE, read_json
    from lam_policy.frames import KEYPOINTS

    keys = read_json(Path(checkpoint) / CONFIG_FILE).get("config", {}).get("observation_keys", [])
    if KEYPOINTS not in keys:
        raise CLIError(f"checkpoint {checkpoint} does not observe {KEYPOINTS} (it observes {list(keys)}): it cannot "
                       f"imitate an operator; train one with --obs-keys observation.state {KEYPOINTS}")


def _mimic_retarget_config(policy):
    """The RetargetConfig the reference path is computed with: policy_node's own in retarget mode,
    else one built from its parameters (the same mapping of operator to robot)."""
    from lam_policy.gestures import GripperConfig
    from lam_policy.retarget import RetargetConfig

    retargeter = getattr(policy, "retargeter", None)
    if retargeter is not None:
        return retargeter.config
    values = {name: policy.get_parameter(name).value for name in MIMIC_RETARGET_PARAMS}
    values["neutral_offset"] = [float(v) for v in values["neutral_offset"]]
    gripper = GripperConfig(close_below=float(policy.get_parameter("pinch_close").value),
                            open_above=float(policy.get_parameter("pinch_open").value))
    return RetargetConfig(**values, gripper=gripper)


def cmd_mimic(args) -> int:
    """Run a mocap clip through capture -> policy (retarget or a lam checkpoint) -> the sim arm and
    report imitation figures."""
    from rclpy.parameter import Parameter

    from lam_capture.capture_node import CaptureNode
    from lam_capture.mocap import MocapSource
    from lam_capture.sources import SourceOptions, parse_spec
    from lam_control.control_node import ControlNode
    from lam_control.monitor_node import MonitorNode
    from lam_control.ros_graph import ForeignWatch, Graph
    from lam_policy.mimic import reference_path, summarize
    from lam_policy.policy_node import PolicyNode

    kind, clip = parse_spec(args.source)
    if kind != "mocap":
        raise CLIError(f"lam mimic needs a mocap:CLIP source (the clean clip is the reference), got {args.source!r}")
    _mimic_checkpoint(args.mode, args.checkpoint)
    clean = MocapSource(clip, SourceOptions(speed=args.speed)).all_keypoints()  # the frames capture will read
    perturb = [Parameter("perturb_noise", value=args.noise / 100.0), Parameter("perturb_dropout", value=args.dropout),
               Parameter("perturb_occlusion_rate", value=args.occlusion), Parameter("perturb_seed", value=args.seed)]
    params = args.params or _default_params(("control", "policy", "capture"))
    with Graph(params, **_graph_domain(args, params)) as graph:
        control = graph.add(ControlNode)
        mode = [Parameter("mode", value=args.mode)]
        if args.checkpoint:
            mode.append(Parameter("checkpoint", value=str(args.checkpoint)))
        policy = graph.add(PolicyNode, parameter_overrides=mode)
        robot = control.arm.robot
        targets, q_start, start_frame = reference_path(robot, _mimic_retarget_config(policy), clean, args.mode)
        control.arm.reset_positions(q_start)  # start on the path: measure imitation, not the approach
        monitor = graph.add(MonitorNode)
        capture = graph.add(CaptureNode, parameter_overrides=[
            Parameter("source", value=args.source), Parameter("loop", value=True),
            Parameter("speed", value=args.speed), *perturb])
        pipeline = capture.pipeline
        frames = args.repeat * len(clean)
        watch = ForeignWatch(graph, ["/lam/keypoints", "/lam/joint_command", "/joint_states"])
        graph.spin(duration=frames / pipeline.source.rate + 20.0, handle_signals=True,
                   until=lambda: watch.poll() or len(pipeline.frame_log) >= frames)
        capture.stop()
        graph.spin(duration=0.5)  # let the last commands land
        watch.poll(force=True)
        if watch.found:
            raise CLIError(f"other publishers on ROS domain {graph.domain_id} ("
                           + ", ".join(f"{t}: {n}" for t, n in watch.found.items())
                           + "): their messages mixed into this run, so its figures are not this clip's; "
                             "stop them or leave out --domain (a private domain is the default)")
        frame_log = list(pipeline.frame_log)[:frames]
        apply = control._apply_age
        cleaner = pipeline.cleaner
        capture_counts = {"capture_frames": pipeline.frames, "capture_published_frames": pipeline.published_frames,
                          "capture_rejected_frames": cleaner.rejected_frames,
                          "capture_held_frames": cleaner.held_frames}
    if not monitor.states or not frame_log:
        raise CLIError("the run recorded nothing (no joint states or no capture frames)")
    names = robot.command_joints
    summary = {"source": args.source, "mode": args.mode, "speed": args.speed, "noise_cm": args.noise,
               "dropout": args.dropout, "occlusion_per_s": args.occlusion,
               **summarize(robot, frame_log, targets, monitor.states, monitor.applied, monitor.commands, names,
                          control.arm.safety_config.control_period, start_frame), **capture_counts}
    if not summary["commands"]:
        print(f"lam mimic: the policy sent no command: capture published {pipeline.published_frames} of "
              f"{pipeline.frames} frames ({cleaner.rejected_frames} rejected as implausible, {cleaner.held_frames} "
              f"held), so the figures are those of an arm holding still", file=sys.stderr)
    if apply:
        summary["capture_to_apply_p50_ms"] = round(float(np.percentile(apply, 50)) * 1e3, 2)
        summary["capture_to_apply_p95_ms"] = round(float(np.percentile(apply, 95)) * 1e3, 2)
    if args.video:
        from lam_policy.mimic_video import write_mimic_video

        idx = [monitor.states[0][1].index(n) for n in names]
        summary["video_frames"] = write_mimic_video(
            robot, np.array([t for t, _, _ in monitor.states]), np.array([q[idx] for _, _, q in monitor.states]),
            frame_log, clean, Path(args.video))
        summary["video"] = args.video
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:30s} {value}")
    return 0 if summary["joint_limit_violations"] == 0 else 1


def cmd_record(args) -> int:
    """Record N episodes of a task through the whole teleop graph, one rosbag2 folder each."""
    from rclpy.parameter import Parameter

    from lam_capture.sources import parse_spec
    from lam_control.record_node import RecordNode
    from lam_control.ros_graph import Graph
    from lam_control.session_node import SessionNode
    from lam_control.tasks import TASKS, TaskConfig

    if args.task not in TASKS:
        raise CLIError(f"unknown task {args.task!r}; choose from: {', '.join(TASKS)}")
    if args.episodes < 1:
        raise CLIError(f"--episodes must be >= 1, got {args.episodes}")
    parse_spec(args.source)
    time_limit = args.time_limit or TaskConfig().time_limits[args.task]
    out = Path(args.out)
    review = _ask_review if args.review else None
    names = ("control", "policy", "capture")
    started = time.monotonic()
    params = args.params or _default_params(names + ("record",))
    with Graph(params, **_graph_domain(args, params)) as graph:
        overrides = {"control": [Parameter("task", value=args.task), Parameter("task_seed", value=args.seed)],
                     "capture": [Parameter("source", value=args.source)], "policy": []}
        for name in names:
            module, cls, _ = NODES[name]
            graph.add(getattr(import_module(module), cls), parameter_overrides=overrides[name])
        graph.add(RecordNode, parameter_overrides=[Parameter("out_dir", value=str(out))])
        session = graph.add(SessionNode, episodes=args.episodes, time_limit=time_limit, review=review,
                            hold=args.hold)
        print(f"lam record: {args.episodes} episode(s) of {args.task} from {args.source} -> {out} "
              f"(time limit {time_limit:g} s; Ctrl-C stops and keeps what was recorded)", flush=True)
        graph.spin(until=lambda: session.done, handle_signals=True)
        results, error = session.results, session.error
        interrupted = not session.done
    # Leaving the graph finalised any open episode (record_node closes it on shutdown).
    kept = [r for r in results if not r.get("discarded")]
    summary = {"out": str(out), "task": args.task, "episodes": len(kept),
               "successes": sum(bool(r.get("success")) for r in kept),
               "discarded": len(results) - len(kept), "wall_time_s": round(time.monotonic() - started, 1),
               "interrupted": interrupted, "error": error or None, "results": results}
    summary["success_rate"] = round(summary["successes"] / len(kept), 3) if kept else None
    print(json.dumps(summary, indent=2) if args.json else
          f"lam record: {summary['episodes']} episode(s), {summary['successes']} successful -> {out}")
    return 1 if error else 0


def cmd_replay(args) -> int:
    """Play an episode's applied commands back on the arm through control_node's safety filter."""
    from lam_control.control_node import ControlNode
    from lam_control.monitor_node import MonitorNode
    from lam_control.player_node import PlayerNode
    from lam_control.replay import applied_commands, command_names, joint_states, read_episode
    from lam_control.ros_graph import Graph, overrides

    ep = read_episode(args.episode)
    names = command_names(ep)
    stamps, positions = applied_commands(ep, names)
    lo, hi = ep.start_ns or stamps[0], ep.end_ns or stamps[-1]
    keep = (stamps >= lo) & (stamps <= hi)
    if keep.sum() < 2:
        raise CLIError(f"episode {ep.name} has fewer than 2 applied commands to replay")
    stamps, positions = stamps[keep], positions[keep]
    times = (stamps - stamps[0]) * 1e-9
    lead_in = args.lead_in
    params = args.params or _default_params()
    with Graph(params, **_graph_domain(args, params)) as graph:
        scene = overrides(task=ep.task, task_seed=int(ep.seed or 0)) if (ep.task and not args.no_task) else []
        control = graph.add(ControlNode, parameter_overrides=scene)
        monitor = graph.add(MonitorNode)
        # The first point is held for lead_in s: the filter ramps the arm there at its caps.
        hold = np.arange(0.0, lead_in, 0.05)
        player = graph.add(PlayerNode, joint_names=names, times=np.concatenate([hold, times + lead_in]),
                           positions=np.vstack([np.repeat(positions[:1], len(hold), axis=0), positions]))
        print(f"lam replay: {ep.name} ({ep.task or 'no task'}, seed {ep.seed}), {len(times)} commands over "
              f"{times[-1]:.1f} s on {control.backend}", flush=True)
        task = getattr(control, "task", None)
        succeeded: list[bool] = []  # the task's success test, checked all along (as when recorded)

        def finished() -> bool:
            if task is not None and not succeeded and task.success():
                succeeded.append(True)
            if player.done and not done_at:
                done_at.append(time.monotonic())
            return bool(done_at) and time.monotonic() - done_at[0] > 1.0

        done_at: list[float] = []
        graph.spin(duration=times[-1] + lead_in + 15.0, handle_signals=True, until=finished)
        success = bool(succeeded) if task is not None else None
        interventions = {k: v for k, v in control.counts.items() if k not in ("accepted", "rejected")}
    summary = {"episode": ep.name, "task": ep.task, "seed": ep.seed, "commands": int(len(times)),
               "recorded_success": ep.success, "replay_success": success, "interventions": interventions}
    rec_t, rec_q = joint_states(ep, names)
    if monitor.states and len(rec_t):
        # Recorded vs replayed joint positions, both on the episode's clock: recorded command i
        # was played at monotonic player.start + lead_in + times[i].
        idx = [monitor.states[0][1].index(n) for n in names]
        play_t = np.array([t for t, _, _ in monitor.states]) - (player.start + lead_in)
        play_q = np.array([q[idx] for _, _, q in monitor.states])
        grid = times[(times >= play_t[0]) & (times <= play_t[-1])]
        rec_clock = (rec_t - stamps[0]) * 1e-9
        err = np.abs(np.stack([np.interp(grid, play_t, play_q[:, j]) - np.interp(grid, rec_clock, rec_q[:, j])
                               for j in range(len(names))], axis=1))
        summary["joint_error_mean_rad"] = round(float(err.mean()), 4) if err.size else None
        summary["joint_error_p95_rad"] = round(float(np.percentile(err, 95)), 4) if err.size else None
    print(json.dumps(summary, indent=2) if args.json else
          "\n".join(f"{k:24s} {v}" for k, v in summary.items()))
    return 0


def _ask_review(result: dict) -> str:
    """Ask the operator about the episode just recorded: keep, discard, or redo."""
    answer = input(f"{result.get('episode')}: success={result.get('success')} "
                   f"({result.get('duration')} s). [Enter] keep, d discard, r re-record: ").strip().lower()
    return {"d": "discard", "r": "redo"}.get(answer[:1], "keep")


def cmd_bench(args) -> int:
    from lam_control.bench import run_benchmarks

    results = run_benchmarks(seconds=args.seconds)
    if args.learning:
        from lam_policy.bench_learning import bench_time_to_success

        results["learning_reach"] = bench_time_to_success()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for section, figures in results.items():
            print(f"{section}:")
            for key, value in figures.items():
                print(f"  {key:32s} {value}")
    return 0


def _add_domain_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", type=int, metavar="ID",
                        help="ROS domain id to run on (default: a private one with no other participant; with a "
                             "ros2_control backend, the environment's ROS_DOMAIN_ID)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lam", description="LAM stack: teleoperation and imitation for robot arms")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start nodes in one process under one executor")
    run.add_argument("--nodes", default="control,policy,capture", help="comma-separated: control, policy, capture, record")
    run.add_argument("--source", help="capture source: camera:N | video:PATH | image:PATH | mocap:CLIP")
    run.add_argument("--params", nargs="+", metavar="FILE",
                     help="ROS 2 parameter YAML files (default: the package's config/control.yaml)")
    run.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    run.add_argument("--mode", help="policy_node mode: retarget | lam")
    run.add_argument("--checkpoint", help="lam mode: the policy checkpoint folder")
    run.add_argument("--task", help="sim task control_node sets up: reach | push | pick_place")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="the main job on its embedded default, with a video")
    demo.add_argument("--out", default="out/demo", help="output folder (video, summary.json)")
    demo.add_argument("--params", nargs="+", metavar="FILE", help="parameter YAML files")
    demo.add_argument("--no-video", action="store_true", help="skip rendering the video")
    _add_domain_argument(demo)
    demo.set_defaults(func=cmd_demo)

    mimic = sub.add_parser("mimic", help="motion imitation metrics for a mocap clip through the whole graph")
    mimic.add_argument("--source", required=True, help="mocap:CLIP (e.g. mocap:punch)")
    mimic.add_argument("--mode", default="retarget", choices=("retarget", "lam"),
                       help="policy_node mode: retarget (live per-frame retargeting) | lam (a learned checkpoint)")
    mimic.add_argument("--checkpoint", metavar="CKPT",
                       help="--mode lam: a checkpoint observing observation.keypoints (lam dataset mimic, lam train)")
    mimic.add_argument("--noise", type=float, default=0.0, metavar="CM", help="keypoint noise std, cm")
    mimic.add_argument("--dropout", type=float, default=0.0, help="landmark dropout probability per frame")
    mimic.add_argument("--occlusion", type=float, default=0.0, metavar="RATE", help="occlusion bursts per second")
    mimic.add_argument("--seed", type=int, default=0, help="perturbation seed")
    mimic.add_argument("--repeat", type=int, default=3, help="times the clip is played (clips are 1-5 s)")
    mimic.add_argument("--speed", type=float, default=1.0, help="playback speed of the clip (0.5 = half speed)")
    mimic.add_argument("--params", nargs="+", metavar="FILE", help="parameter YAML files for the three nodes")
    mimic.add_argument("--video", metavar="MP4", help="also write a video of the run")
    mimic.add_argument("--json", action="store_true", help="print JSON")
    _add_domain_argument(mimic)
    mimic.set_defaults(func=cmd_mimic)

    record = sub.add_parser("record", help="record demonstrations of a sim task, one rosbag2 folder per episode")
    record.add_argument("--source", required=True, help="capture source, e.g. scripted:reach, camera:0")
    record.add_argument("--task", required=True, help="sim task: reach | push | pick_place")
    record.add_argument("--episodes", type=int, default=1, help="episodes to record")
    record.add_argument("--seed", type=int, default=0, help="seed of the first episode (then +1 each)")
    record.add_argument("--out", required=True, help="output folder (episodes are appended)")
    record.add_argument("--time-limit", type=float, help="s per episode (default: the task's)")
    record.add_argument("--hold", type=float, default=1.0,
                        help="s recorded after the task succeeds (the operator settling on the goal)")
    record.add_argument("--review", action="store_true", help="ask to keep, discard or re-record each episode")
    record.add_argument("--params", nargs="+", metavar="FILE", help="parameter YAML files for the nodes")
    record.add_argument("--json", action="store_true", help="print a JSON summary")
    _add_domain_argument(record)
    record.set_defaults(func=cmd_record)

    replay = sub.add_parser("replay", help="play an episode's commands back on the arm through the safety filter")
    replay.add_argument("episode", help="episode folder (rosbag2 MCAP)")
    replay.add_argument("--params", nargs="+", metavar="FILE",
                        help="control_node parameter files (default: the sim; a ros2_control file drives a real arm)")
    replay.add_argument("--no-task", action="store_true", help="do not set up the episode's sim task")
    replay.add_argument("--lead-in", type=float, default=2.0, help="s to move to the first command before playing")
    replay.add_argument("--json", action="store_true", help="print JSON")
    _add_domain_argument(replay)
    replay.set_defaults(func=cmd_replay)

    from lam_policy.dataset_cli import add_dataset_parser
    from lam_policy.learn_cli import add_learn_parsers

    add_dataset_parser(sub)
    add_learn_parsers(sub)

    bench = sub.add_parser("bench", help="measure the stack's speed")
    bench.add_argument("--seconds", type=float, default=5.0, help="duration of the node loop measurement")
    bench.add_argument("--learning", action="store_true",
                       help="also time recording 50 reach demos and training ACT to 90%% success (~10 min)")
    bench.add_argument("--json", action="store_true", help="print JSON")
    bench.set_defaults(func=cmd_bench)
    return parser


def emit(reply: Reply) -> int:
    """Print a command's Reply (stdout lines, then stderr lines); its exit code."""
    for line in reply.out:
        print(line)
    for line in reply.err:
        print(line, file=sys.stderr)
    return reply.code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from lam_control.ros_graph import GraphError

    try:
        result = args.func(args)
        return emit(result) if isinstance(result, Reply) else result
    except (CLIError, GraphError, FileNotFoundError, ValueError) as exc:
        print(f"lam {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
