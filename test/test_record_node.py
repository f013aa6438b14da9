"""record_node and episode control through real rclpy: exact round trips, events, discard,
finalisation on SIGINT/SIGTERM, and kill -9 recovery of a recording process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from geometry_msgs.msg import Pose, PoseArray
from rclpy.node import Node
from rclpy.qos import qos_profile_system_default
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from lam_control.episodes import EpisodeSession, EpisodeStateError
from lam_control.record_node import RecordNode
from lam_control.ros_graph import Graph

from ros_helpers import domain_id, stop_process

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
NAMES = ["shoulder_yaw", "elbow", "finger_left"]


class Feeder(Node):
    """An outside node: publishes states, poses and events, and calls the episode services."""

    def __init__(self, **kwargs):
        super().__init__("test_feeder", **kwargs)
        self.states = self.create_publisher(JointState, "/joint_states", qos_profile_system_default)
        self.poses = self.create_publisher(PoseArray, "/lam/object_poses", qos_profile_system_default)
        self.events = self.create_publisher(String, "/lam/events", qos_profile_system_default)
        self.episode = {n: self.create_client(Trigger, f"/lam/episode/{n}")
                        for n in ("start", "stop", "mark_success", "discard")}


def call(graph: Graph, feeder: Feeder, name: str, timeout: float = 5.0):
    client = feeder.episode[name]
    end = time.monotonic() + timeout
    while not client.service_is_ready() and time.monotonic() < end:
        graph.spin(duration=0.05)
    future = client.call_async(Trigger.Request())
    graph.spin(duration=timeout, until=future.done)
    assert future.done(), f"{name} did not answer"
    return future.result()


def read_bag(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, TYPESTORE.deserialize_cdr(raw, conn.msgtype)))
    return out


def wait_matched(graph: Graph, publisher, timeout: float = 5.0) -> None:
    graph.spin(duration=timeout, until=lambda: publisher.get_subscription_count() > 0)
    assert publisher.get_subscription_count() > 0


def test_recording_round_trips_exactly_with_events(tmp_path):
    with Graph(domain_id=domain_id()) as graph:
        recorder = graph.add(RecordNode, parameter_overrides=[_param("out_dir", str(tmp_path))])
        feeder = graph.add(Feeder)
        wait_matched(graph, feeder.states)
        wait_matched(graph, feeder.poses)
        feeder.events.publish(String(data=json.dumps({"event": "task_reset", "task": "reach", "seed": 7})))
        graph.spin(duration=0.3)
        feeder.states.publish(JointState(name=NAMES, position=[9.0, 9.0, 9.0]))  # before start: not kept
        graph.spin(duration=0.2)
        assert call(graph, feeder, "start").success
        sent = []
        for i in range(60):
            q = [0.01 * i, -0.02 * i, 0.0004 * i]
            feeder.states.publish(JointState(name=NAMES, position=q))
            sent.append(q)
            if i % 10 == 0:
                feeder.poses.publish(PoseArray(poses=[Pose()]))
            graph.spin(duration=0.01)
        graph.spin(duration=0.3)
        assert call(graph, feeder, "mark_success").success
        feeder.events.publish(String(data=json.dumps({"event": "correction", "note": "took over"})))
        graph.spin(duration=0.3)
        reply = call(graph, feeder, "stop")
        assert reply.success, reply.message
        assert not call(graph, feeder, "stop").success  # nothing recording now: a clear refusal
        name = json.loads(reply.message)["episode"]
        assert recorder.session.finished[-1].success
    bag = read_bag(tmp_path / name)
    got = [list(m.position) for _, m in bag["/joint_states"]]
    assert got == sent  # every message, in order, bit-exact
    assert len(bag["/lam/object_poses"]) == 6
    events = [json.loads(m.data) for _, m in bag["/lam/events"]]
    assert [e["event"] for e in events] == ["start", "success", "correction", "end"]
    assert events[0]["task"] == "reach" and events[0]["seed"] == 7
    assert events[-1]["success"] is True
    from lam_control.replay import read_episode

    assert read_episode(tmp_path / name).metadata["success"] == "true"


def test_discard_moves_the_last_episode_aside(tmp_path):
    session = EpisodeSession(tmp_path, {"/joint_states": "sensor_msgs/msg/JointState"})
    with pytest.raises(EpisodeStateError):
        session.discard(0)
    with pytest.raises(EpisodeStateError):
        session.stop(0)
    first = session.start(1_000)
    session.stop(2_000)
    second = session.start(3_000)
    with pytest.raises(EpisodeStateError):
        session.start(3_500)  # one episode at a time
    assert session.discard(4_000) == second  # the recording one
    assert session.discard(5_000) == first  # then the last finished one
    assert sorted(p.name for p in (tmp_path / "discarded").iterdir()) == [first, second]
    # numbering continues after discarded episodes: nothing is ever overwritten
    assert session.start(6_000) == "episode_000002"
    session.close(7_000)
    assert (tmp_path / "episode_000002" / "metadata.yaml").exists()


RECORD_SCRIPT = """
import sys, time, json
from lam_control.record_node import RecordNode
from lam_control.ros_graph import Graph
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from rclpy.qos import qos_profile_system_default
with Graph(domain_id=int(sys.argv[2])) as graph:
    rec = graph.add(RecordNode, parameter_overrides=[Parameter("out_dir", value=sys.argv[1])])
    rec.session.start(rec.now_ns())
    pub = rec.create_publisher(JointState, "/joint_states", qos_profile_system_default)
    graph.spin(duration=2.0, until=lambda: pub.get_subscription_count() > 0)
    print("recording", flush=True)
    i = 0
    def tick():
        global i
        pub.publish(JointState(name=["j"], position=[float(i)]))
        i += 1
        if i % 10 == 0:
            print(json.dumps({"sent": i, "t": time.time_ns()}), flush=True)
    rec.create_timer(0.01, tick)
    graph.spin(duration=60.0, handle_signals=True)
"""


def _start_recorder(tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", RECORD_SCRIPT, str(tmp_path), str(domain_id())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "recording", proc.stderr.read()
    return proc


def _progress(proc: subprocess.Popen, seconds: float) -> dict:
    """Read the child's progress lines for ``seconds``; the last one."""
    last, end = {}, time.monotonic() + seconds
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if line.startswith("{"):
            last = json.loads(line)
    return last


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finalises_the_episode_within_5_s(tmp_path, sig):
    proc = _start_recorder(tmp_path)
    try:
        last = _progress(proc, 1.5)
        sent_at = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=5.0)
        assert time.monotonic() - sent_at < 5.0
    finally:
        stop_process(proc)
    bag = read_bag(tmp_path / "episode_000000")  # finalised: the reader opens it as is
    values = [m.position[0] for _, m in bag["/joint_states"]]
    assert values == [float(i) for i in range(len(values))]
    assert len(values) >= last["sent"] - 5
    assert json.loads(bag["/lam/events"][-1][1].data)["reason"] == "shutdown"


def test_kill_9_loses_at_most_the_last_second(tmp_path):
    from lam_control.recorder import recover

    proc = _start_recorder(tmp_path)
    try:
        last = _progress(proc, 3.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5.0)
    finally:
        stop_process(proc)
    episode = tmp_path / "episode_000000"
    report = recover(episode)
    bag = read_bag(episode)
    values = [m.position[0] for _, m in bag["/joint_states"]]
    assert values == [float(i) for i in range(len(values))]  # a gap-free prefix
    # At 100 Hz, everything but the last second: at least (sent - 100) messages survive.
    assert len(values) >= last["sent"] - 100, (len(values), last, report)
    last_stamp = bag["/joint_states"][-1][0]
    assert (last["t"] - last_stamp) * 1e-9 < 1.0


def _param(name, value):
    from rclpy.parameter import Parameter

    return Parameter(name, value=value)
