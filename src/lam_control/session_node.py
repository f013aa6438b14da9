"""session_node: runs a recording session of N episodes through the services of the graph.

Per episode: /lam/task/reset (control_node; new seed, objects re-placed, arm home) -> announce
the task on /lam/events -> settle -> /lam/episode/start (record_node) -> run until the task
succeeds (/lam/task/success) and a short hold has passed, or the time limit -> mark_success
when it succeeded -> /lam/episode/stop. An optional ``review`` callback decides, after each
episode, to keep it, discard it, or discard it and record one more.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from lam_control.ros_qos import STATE_QOS

LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
SERVICES = ("/lam/task/reset", "/lam/episode/start", "/lam/episode/mark_success",
            "/lam/episode/stop", "/lam/episode/discard")


class SessionNode(Node):
    """Drives ``episodes`` episodes; ``done`` when finished, ``error`` set on a failed call."""

    def __init__(self, episodes: int, time_limit: float, *, settle: float = 0.3, hold: float = 0.5,
                 review: Callable[[dict], str] | None = None, **kwargs):
        super().__init__("session_node", **kwargs)
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        if not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 s, got {time_limit}")
        self.remaining, self.time_limit, self.settle, self.hold = episodes, time_limit, settle, hold
        self.review = review
        self.services_ = {name: self.create_client(Trigger, name) for name in SERVICES}
        self.events = self.create_publisher(String, "/lam/events", STATE_QOS)
        self.create_subscription(Bool, "/lam/task/success", self._on_success, LATCHED_QOS)
        self.success = False
        self.results: list[dict] = []
        self.done, self.error = False, ""
        self._state, self._since, self._pending = "wait_services", time.monotonic(), None
        self._reset_reply: dict = {}
        self._success_at: float | None = None
        self._run_start = 0.0
        self._called_at = 0.0
        self.create_timer(0.02, self._on_timer)

    def _on_success(self, msg: Bool) -> None:
        self.success = bool(msg.data)

    def _call(self, name: str, then: str) -> None:
        future = self.services_[name].call_async(Trigger.Request())
        self._pending = (name, future, then)
        self._called_at = time.monotonic()

    def _enter(self, state: str) -> None:
        self._state, self._since = state, time.monotonic()

    def _on_timer(self) -> None:
        if self.done:
            return
        if self._pending is not None:
            name, future, then = self._pending
            if not future.done():
                if time.monotonic() - self._called_at > 10.0:
                    self._fail(f"{name} did not answer within 10 s")
                return
            self._pending = None
            reply = future.result()
            if reply is None or not reply.success:
                self._fail(f"{name} failed: {getattr(reply, 'message', 'no reply')}")
                return
            self._on_reply(name, reply.message)
            self._enter(then)
            return
        getattr(self, f"_state_{self._state}")()

    def _fail(self, message: str) -> None:
        self.error, self.done = message, True
        self.get_logger().error(message)

    def _on_reply(self, name: str, message: str) -> None:
        if name == "/lam/task/reset":
            self._reset_reply = json.loads(message) if message.startswith("{") else {}
            self.events.publish(String(data=json.dumps({"event": "task_reset", **self._reset_reply})))
        elif name == "/lam/episode/start":
            self._run_start = time.monotonic()
        elif name == "/lam/episode/stop":
            self.results.append({**json.loads(message), **self._reset_reply})

    # -- states ---------------------------------------------------------------------------------
    def _state_wait_services(self) -> None:
        if all(c.service_is_ready() for c in self.services_.values()):
            self._call("/lam/task/reset", "settle")
        elif time.monotonic() - self._since > 15.0:
            missing = [n for n, c in self.services_.items() if not c.service_is_ready()]
            self._fail(f"services not available: {missing}")

    def _state_settle(self) -> None:
        if time.monotonic() - self._since >= self.settle and not self.success:
            self._success_at = None
            self._call("/lam/episode/start", "run")

    def _state_run(self) -> None:
        now = time.monotonic()
        if self.success and self._success_at is None:
            self._success_at = now
            self._call("/lam/episode/mark_success", "run")
            return
        held = self._success_at is not None and now - self._success_at >= self.hold
        if held or now - self._run_start >= self.time_limit:
            self._call("/lam/episode/stop", "reviewed")

    def _state_reviewed(self) -> None:
        verdict = self.review(self.results[-1]) if self.review else "keep"
        if verdict in ("discard", "redo"):
            self.results[-1]["discarded"] = True
            self.remaining += 1 if verdict == "redo" else 0
            self._call("/lam/episode/discard", "next")
        else:
            self._enter("next")

    def _state_next(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.done = True
        else:
            self._call("/lam/task/reset", "settle")
