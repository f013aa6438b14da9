"""Run ROS 2 nodes in one process under one executor (composition), with a private context.

Used by `lam run`, `lam demo`, the benchmarks and the node tests, so all of them start nodes the
same way the launch files do: the same parameter YAML files, passed as --params-file arguments.

A self-contained graph (`lam mimic`, `lam demo`, the benchmarks: capture, policy and a simulated
arm in one process) runs on a private domain (``Graph(private=True)``): a ROS domain id in
``PRIVATE_DOMAINS`` on which no other participant was seen. On the shared domain its
/lam/joint_command would reach any control node there (a physical arm's), and another graph's
/joint_states and commands would mix into its own: two `lam mimic` runs at once on one domain
measured one clip at 68 and 107 mm with nearly three times the commands of a run alone
(1854 against 660; alone 64 mm).
"""
from __future__ import annotations

import logging
import random
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import rclpy
import yaml
from rclpy.context import Context
from rclpy.parameter import Parameter
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor


log = logging.getLogger(__name__)

# ROS 2's second port-safe range of domain ids on Linux (0-101 is the first; users and the test
# suite's per-process domains live there).
PRIVATE_DOMAINS = tuple(range(215, 233))
PROBE_SECONDS = 0.3  # s waited for discovery before a candidate domain counts as unused


class GraphError(RuntimeError):
    """The graph could not start (bad parameter file, node construction failed, no free domain)."""


def check_params_file(path: str | Path) -> Path:
    """A parameter file must exist and be ROS 2 parameter YAML; GraphError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GraphError(f"parameter file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not all(
            isinstance(v, dict) and "ros__parameters" in v for v in data.values()):
        raise GraphError(f"parameter file {path} must map node names to 'ros__parameters' sections")
    return path


class Graph:
    """Nodes sharing one private rclpy Context and one executor.

    ``threads=1`` (default) uses a SingleThreadedExecutor: on a 2-core machine under the GIL,
    rclpy's MultiThreadedExecutor busy-polls its pending tasks and starves timers (measured:
    a 100 Hz control timer fell to ~10 Hz), while one thread keeps every timer on time.
    """

    def __init__(self, params: list[str | Path] = (), domain_id: int | None = None, threads: int = 1,
                 private: bool = False):
        """``domain_id`` None: the environment's ROS_DOMAIN_ID (default 0). ``private``: instead,
        a domain in PRIVATE_DOMAINS with no other participant (see the module docstring)."""
        files = [check_params_file(p) for p in params]
        args = ["--ros-args"]
        for f in files:
            args += ["--params-file", str(f)]
        if private and domain_id is not None:
            raise ValueError("Graph: pass domain_id or private=True, not both")
        self.context = self._private_context(args) if private else self._context(args, domain_id)
        self.domain_id = self.context.get_domain_id()
        self.executor = (SingleThreadedExecutor(context=self.context) if threads == 1
                         else MultiThreadedExecutor(num_threads=threads, context=self.context))
        self.nodes: list = []
        self._stop = threading.Event()

    @staticmethod
    def _context(args: list[str], domain_id: int | None) -> Context:
        context = Context()
        kwargs = {} if domain_id is None else {"domain_id": domain_id}
        rclpy.init(args=args, context=context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO,
                   **kwargs)
        return context

    @classmethod
    def _private_context(cls, args: list[str]) -> Context:
        """A context on the first domain of PRIVATE_DOMAINS (in random order, so that graphs
        started together spread out) on which a probe node discovers no other node."""
        candidates = list(PRIVATE_DOMAINS)
        random.SystemRandom().shuffle(candidates)
        for domain in candidates:
            context = cls._context(args, domain)
            probe = rclpy.create_node(f"lam_domain_probe_{id(context):x}", context=context,
                                      start_parameter_services=False, enable_rosout=False)
            others: list = []
            deadline = time.monotonic() + PROBE_SECONDS
            while not others and time.monotonic() < deadline:
                time.sleep(0.02)
                others = [n for n, _ in probe.get_node_names_and_namespaces() if n != probe.get_name()]
            probe.destroy_node()
            if not others:
                log.info("private ROS domain %d", domain)
                return context
            log.info("ROS domain %d is in use (%s): trying another", domain, ", ".join(sorted(others)[:3]))
            rclpy.try_shutdown(context=context)
        raise GraphError(f"no free ROS domain in {PRIVATE_DOMAINS[0]}-{PRIVATE_DOMAINS[-1]}: other participants "
                         f"use all of them")

    def foreign_publishers(self, topics: list[str]) -> dict[str, int]:
        """Publishers on ``topics`` that are not this graph's own (topic -> count; only topics
        that have some): another graph on the same domain, whose messages mix with ours."""
        if not self.nodes:
            return {}
        own = {t: sum(1 for n in self.nodes for p in n.publishers if p.topic_name == t) for t in topics}
        seen = {t: self.nodes[0].count_publishers(t) for t in topics}
        return {t: seen[t] - own[t] for t in topics if seen[t] > own[t]}

    def add(self, factory: Callable, **kwargs):
        """Construct a node in this graph's context and add it to the executor."""
        try:
            node = factory(context=self.context, **kwargs)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise GraphError(str(exc)) from exc
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def stop(self, *_args) -> None:
        self._stop.set()

    def spin(self, duration: float | None = None, until: Callable[[], bool] | None = None,
             handle_signals: bool = False) -> None:
        """Spin until ``duration`` s pass, ``until()`` is true, stop() is called, or SIGINT/SIGTERM."""
        previous = {}
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self.stop)
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set() and self.context.ok():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if until is not None and until():
                    break
                self.executor.spin_once(timeout_sec=0.05)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def close(self) -> None:
        # Executor first, so no pending callback outlives the entity it belongs to.
        self.executor.shutdown(timeout_sec=2.0)
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes.clear()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> "Graph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ForeignWatch:
    """Polls ``graph.foreign_publishers(topics)`` at most every ``period`` s during a run;
    ``found`` keeps the most publishers seen per topic (a graph that came and went counts too)."""

    def __init__(self, graph: Graph, topics: list[str], period: float = 0.5):
        self.graph, self.topics, self.period = graph, list(topics), period
        self.found: dict[str, int] = {}
        self._last = -float("inf")

    def poll(self, force: bool = False) -> bool:
        """Check now if due (or ``force``); returns False, so it can sit in a spin's ``until``."""
        now = time.monotonic()
        if force or now - self._last >= self.period:
            self._last = now
            for topic, count in self.graph.foreign_publishers(self.topics).items():
                self.found[topic] = max(self.found.get(topic, 0), count)
        return False


def overrides(**values) -> list[Parameter]:
    """Parameter overrides for Graph.add(..., parameter_overrides=overrides(name=value, ...))."""
    return [Parameter(name, value=value) for name, value in values.items()]
