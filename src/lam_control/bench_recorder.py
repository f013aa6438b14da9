"""`lam bench` recording section: EpisodeWriter throughput, and the recorder's cost while the
whole teleop graph runs."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from lam_control.recorder import EpisodeWriter, typestore


def _sample_messages() -> list[tuple[str, bytes]]:
    """One 30 Hz frame's worth of realistic traffic: keypoints, 3 joint states, 3 applied commands,
    one command and object poses (what the recorder sees per capture frame at 100 Hz control)."""
    ts = typestore()
    t = ts.types
    names = ["shoulder_yaw", "shoulder_pitch", "shoulder_roll", "elbow", "wrist_roll", "wrist_pitch",
             "wrist_yaw", "finger_left", "finger_right"]
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="base_link")
    state = t["sensor_msgs/msg/JointState"](header=header, name=names, position=np.linspace(0, 1, 9),
                                            velocity=np.zeros(9), effort=np.zeros(0))
    fields = [t["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate(("x", "y", "z", "confidence"))]
    cloud = t["sensor_msgs/msg/PointCloud2"](header=header, height=1, width=75, fields=fields, is_bigendian=False,
                                             point_step=16, row_step=1200,
                                             data=np.random.default_rng(0).integers(0, 255, 1200, dtype=np.uint8),
                                             is_dense=True)
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.4, y=0.0, z=0.02),
                                       orientation=t["geometry_msgs/msg/Quaternion"](x=0, y=0, z=0, w=1))
    poses = t["geometry_msgs/msg/PoseArray"](header=header, poses=[pose, pose])
    ser = lambda msg, kind: bytes(ts.serialize_cdr(msg, kind))  # noqa: E731
    s, c, p = (ser(state, "sensor_msgs/msg/JointState"), ser(cloud, "sensor_msgs/msg/PointCloud2"),
               ser(poses, "geometry_msgs/msg/PoseArray"))
    return [("/lam/keypoints", c)] + [("/joint_states", s), ("/lam/applied_command", s)] * 3 + \
        [("/lam/object_poses", p)] * 3


def bench_writer(frames: int = 3000) -> dict:
    """Messages/s and MB/s EpisodeWriter sustains (fsync every flush, as when recording)."""
    batch = _sample_messages()
    topics = {"/lam/keypoints": "sensor_msgs/msg/PointCloud2", "/joint_states": "sensor_msgs/msg/JointState",
              "/lam/applied_command": "sensor_msgs/msg/JointState",
              "/lam/object_poses": "geometry_msgs/msg/PoseArray"}
    with tempfile.TemporaryDirectory() as tmp:
        writer = EpisodeWriter(Path(tmp) / "episode_000000", topics)
        t0 = time.perf_counter()
        stamp = 0
        for _ in range(frames):
            for topic, data in batch:
                stamp += 3_333_333
                writer.write(topic, stamp, data)
        writer.close()
        elapsed = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (Path(tmp) / "episode_000000").iterdir())
    n = frames * len(batch)
    return {"messages": n, "messages_per_s": round(n / elapsed), "mb_per_s": round(size / elapsed / 1e6, 2),
            "flushes": writer.flushes}


def bench_recording_teleop(seconds: float = 5.0, clip: str = "walk") -> dict:
    """The recorder inside the running teleop graph (mocap clip -> retarget -> sim arm): messages
    recorded per second and the CPU the recording callbacks took, as a fraction of one core."""
    from lam_capture.capture_node import CaptureNode
    from lam_control.control_node import ControlNode
    from lam_control.record_node import RecordNode
    from lam_control.resources import share_file
    from lam_control.ros_graph import Graph, overrides
    from lam_policy.policy_node import PolicyNode

    params = [share_file(f"config/{n}.yaml") for n in ("control", "policy", "capture", "record")]
    with tempfile.TemporaryDirectory() as tmp, Graph(params, private=True) as graph:
        graph.add(ControlNode)
        graph.add(PolicyNode)
        graph.add(CaptureNode, parameter_overrides=overrides(source=f"mocap:{clip}", loop=True))
        rec = graph.add(RecordNode, parameter_overrides=overrides(out_dir=tmp))
        graph.spin(duration=2.0)  # calibration and discovery
        rec.session.start(rec.now_ns())
        written0, cpu0, t0 = rec.written, rec.cpu_ns, time.monotonic()
        proc0 = time.process_time()
        graph.spin(duration=seconds)
        wall = time.monotonic() - t0
        proc = time.process_time() - proc0
        written, cpu = rec.written - written0, rec.cpu_ns - cpu0
        rec.session.stop(rec.now_ns())
    return {"clip": clip, "seconds": round(wall, 2), "messages_per_s": round(written / wall, 1),
            "recorder_cpu_fraction_of_core": round(cpu * 1e-9 / wall, 4),
            "recorder_cpu_us_per_message": round(cpu * 1e-3 / max(written, 1), 1),
            "process_cpu_fraction_of_core": round(proc / wall, 3)}


def run_recorder_benchmarks(seconds: float = 5.0) -> dict:
    return {"recorder_writer": bench_writer(), "recorder_while_teleoperating": bench_recording_teleop(seconds)}
