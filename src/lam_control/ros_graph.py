"""Run ROS 2 nodes in one process under one executor (composition), with a private context.

Used by `lam run`, `lam demo`, the benchmarks and the node tests, so all of them start nodes the
same way the launch files do: the same parameter YAML files, passed as --params-file arguments.
"""
from __future__ import annotations

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


class GraphError(RuntimeError):
    """The graph could not start (bad parameter file, node construction failed)."""


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

    def __init__(self, params: list[str | Path] = (), domain_id: int | None = None, threads: int = 1):
        files = [check_params_file(p) for p in params]
        args = ["--ros-args"]
        for f in files:
            args += ["--params-file", str(f)]
        self.context = Context()
        kwargs = {} if domain_id is None else {"domain_id": domain_id}
        rclpy.init(args=args, context=self.context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO,
                   **kwargs)
        self.executor = (SingleThreadedExecutor(context=self.context) if threads == 1
                         else MultiThreadedExecutor(num_threads=threads, context=self.context))
        self.nodes: list = []
        self._stop = threading.Event()

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


def overrides(**values) -> list[Parameter]:
    """Parameter overrides for Graph.add(..., parameter_overrides=overrides(name=value, ...))."""
    return [Parameter(name, value=value) for name, value in values.items()]
