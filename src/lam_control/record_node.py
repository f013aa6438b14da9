"""record_node: episode recording of the LAM graph, one rosbag2 MCAP folder per episode.

Subscribes every recorded topic raw (the serialized bytes go to the bag untouched, so a replay
is bit-exact), and serves episode control. The bag's /lam/events topic carries start, end,
success and operator-correction events (std_msgs/String, JSON).
"""
from __future__ import annotations

import json
import time
from importlib import import_module

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from lam_control.episodes import EpisodeSession, EpisodeStateError
from lam_control.recorder import typestore
from lam_control.ros_params import declare_parameters
from lam_control.ros_qos import RECORD_QOS, STATE_QOS

# topic: (rosbag2 message type, best effort?) - keypoints are a best-effort sensor stream.
TOPICS = {
    "/lam/keypoints": ("sensor_msgs/msg/PointCloud2", True),
    "/joint_states": ("sensor_msgs/msg/JointState", False),
    "/lam/applied_command": ("sensor_msgs/msg/JointState", False),
    "/lam/joint_command": ("trajectory_msgs/msg/JointTrajectory", False),
    "/lam/object_poses": ("geometry_msgs/msg/PoseArray", False),
}
EVENTS_TOPIC = "/lam/events"
# Best-effort recording of a sensor stream: deep, so a burst is not dropped by the queue.
RECORD_SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                               reliability=ReliabilityPolicy.BEST_EFFORT)

PARAMETERS = {
    "out_dir": ("", "folder of episode folders (required)"),
    "topics": (list(TOPICS), "topics to record (a subset of the known ones)"),
    "flush_period": (0.5, "s between flushes to disk: a crash loses at most this much"),
}


def message_class(type_name: str):
    """'sensor_msgs/msg/JointState' -> the rclpy message class."""
    package, kind, name = type_name.split("/")
    return getattr(import_module(f"{package}.{kind}"), name)


class RecordNode(Node):
    """Records episodes.

    Services (std_srvs/Trigger): /lam/episode/start, /lam/episode/stop,
    /lam/episode/mark_success, /lam/episode/discard (the recording episode, else the last one).
    Subscribes: the recorded topics (raw), /lam/events (std_msgs/String JSON from other nodes:
    ``{"event": "task_reset", "task", "seed"}`` tags the next episodes; ``{"event":
    "correction", ...}`` is recorded as an operator correction).
    Publishes: /lam/events (this node's own events, with ``"source": "recorder"``).
    """

    def __init__(self, **kwargs):
        super().__init__("record_node", **kwargs)
        get = declare_parameters(self, PARAMETERS)
        out = get("out_dir")
        if not out:
            raise ValueError("record_node needs the out_dir parameter (a folder for episodes)")
        unknown = sorted(set(get("topics")) - set(TOPICS))
        if unknown:
            raise ValueError(f"record_node cannot record {unknown}; known topics: {sorted(TOPICS)}")
        topics = {t: TOPICS[t][0] for t in get("topics")}
        self.session = EpisodeSession(out, topics, flush_period=get("flush_period"))
        typestore()  # build the message definitions now, not inside the first /lam/episode/start
        self.written, self.cpu_ns = 0, 0  # messages recorded and CPU spent recording them (bench)
        for topic in topics:
            type_name, sensor = TOPICS[topic]
            self.create_subscription(message_class(type_name), topic, self._writer_for(topic),
                                     RECORD_SENSOR_QOS if sensor else RECORD_QOS, raw=True)
        self.create_subscription(String, EVENTS_TOPIC, self._on_event, RECORD_QOS)
        self.events = self.create_publisher(String, EVENTS_TOPIC, STATE_QOS)
        for name, handler in (("start", self._start), ("stop", self._stop),
                              ("mark_success", self._success), ("discard", self._discard)):
            self.create_service(Trigger, f"/lam/episode/{name}", self._service(handler))

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _writer_for(self, topic: str):
        def write(data: bytes) -> None:
            started = time.thread_time_ns()
            if self.session.write(topic, self.now_ns(), data):
                self.written += 1
            self.cpu_ns += time.thread_time_ns() - started
        return write

    def _service(self, handler):
        def call(_request, response):
            try:
                response.message = handler(self.now_ns())
                response.success = True
            except (EpisodeStateError, OSError) as exc:
                response.success, response.message = False, str(exc)
            return response
        return call

    def _announce(self, event: str, **fields) -> str:
        text = json.dumps({"event": event, "source": "recorder", **fields})
        self.events.publish(String(data=text))
        return text

    def _start(self, now: int) -> str:
        name = self.session.start(now)
        return self._announce("start", episode=name, task=self.session.task, seed=self.session.seed)

    def _stop(self, now: int) -> str:
        s = self.session.stop(now)
        return self._announce("end", episode=s.name, success=s.success, duration=s.duration,
                              messages=s.messages)

    def _success(self, now: int) -> str:
        self.session.mark_success(now)
        return self._announce("success", episode=self.session.current)

    def _discard(self, now: int) -> str:
        return self._announce("discard", episode=self.session.discard(now))

    def _on_event(self, msg: String) -> None:
        try:
            event = json.loads(msg.data)
        except json.JSONDecodeError:
            self.get_logger().warning(f"ignoring a non-JSON event on {EVENTS_TOPIC}: {msg.data[:80]!r}")
            return
        if not isinstance(event, dict) or event.get("source") == "recorder":
            return
        kind = event.get("event")
        if kind == "task_reset":
            self.session.set_task(event.get("task", ""), event.get("seed"))
        elif kind == "correction":
            details = {k: v for k, v in event.items() if k not in ("event", "episode", "task", "seed")}
            self.session.correction(self.now_ns(), **details)

    def destroy_node(self) -> None:
        # Finalise an open episode on any shutdown path: nothing recorded is left unindexed.
        self.session.close(self.now_ns())
        super().destroy_node()


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = RecordNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
