"""control_node's ros2_control backend on real rclpy, against a fake joint_trajectory_controller.

The fake (test/fake_jtc.py) subscribes with the real controller's QoS and publishes
/joint_states like joint_state_broadcaster, so these tests cover what reaches a physical arm:
only filtered, finite, in-limit setpoints, nothing before the arm's state is known, and a
latched hold when its joint states go stale.
"""
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from fake_jtc import FakeJointTrajectoryController
from lam_control.control_node import ControlNode
from lam_control.monitor_node import MonitorNode
from lam_control.resources import share_file
from lam_control.robot import RobotConfig
from lam_control.ros_convert import duration_to_sec
from lam_control.ros_graph import Graph
from ros_helpers import Operator, domain_id, positions_by_name, stream

ROS2_CONTROL = [Parameter("backend", value="ros2_control")]
TARGET = [0.3, 0.7, -0.2, 1.2, 0.3, 0.8, 0.1, 0.02, 0.02]  # inside every margin and the workspace box
FAR = [10.0, -10.0, 10.0, 10.0, -10.0, 10.0, -10.0, 1.0, -1.0]  # past every URDF limit
GOAL = [1.5, 0.5, 0.0, 1.5, 0.0, 1.1, 0.0, 0.035, 0.035]  # ~2.5 s from home under the Cartesian cap
ERROR = 2  # diagnostic_msgs/DiagnosticStatus.ERROR


@pytest.fixture
def graph():
    with Graph([share_file("config/control.yaml")], domain_id=domain_id()) as g:
        yield g


def start(graph, initial=None, paused=False):
    """control_node (ros2_control), the fake controller, a monitor and an operator, connected."""
    control = graph.add(ControlNode, parameter_overrides=ROS2_CONTROL)
    fake = graph.add(FakeJointTrajectoryController, initial=initial)
    if paused:
        fake.pause_states()  # before the first spin: not one /joint_states goes out
    monitor = graph.add(MonitorNode)
    operator = graph.add(Operator)

    def connected():
        return (operator.cmd.get_subscription_count() > 0 and fake.sub.get_publisher_count() > 0
                and (paused or control.arm.read_state() is not None))

    graph.spin(duration=3.0, until=connected)
    assert connected(), "the nodes never discovered each other"
    return control, fake, monitor, operator


def streamed(fake, since=0.0):
    """(times (N,), positions (N, J)) of every point the fake received after ``since``, by name."""
    entries = [(t, list(m.joint_names), np.array(m.points[-1].positions)) for t, m in fake.messages
               if t > since and m.points]
    return np.array([t for t, _, _ in entries]), positions_by_name(entries, fake.joint_names)


def latest_safety(monitor):
    entries = [d for _, d in monitor.diagnostics if d["_name"] == "lam control: safety"]
    return entries[-1] if entries else {}


def call_reset(graph, operator):
    assert operator.reset_client.wait_for_service(timeout_sec=2.0)
    future = operator.reset_client.call_async(Trigger.Request())
    graph.spin(duration=2.0, until=future.done)
    assert future.done() and future.result().success


def stream_until(graph, operator, names, target, seconds, until):
    """Stream ``target`` at 20 Hz until ``until()`` or ``seconds`` pass."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        stream(graph, operator, names, target, seconds=0.05)


def test_command_reaches_the_controller_and_its_joint_states(graph):
    control, fake, monitor, operator = start(graph)
    names = control.joint_names
    assert not np.allclose(fake.positions, TARGET, atol=0.05), "the fake starts at the target"

    def arrived():
        return monitor.states and np.max(np.abs(positions_by_name(monitor.states[-1:], names)[0] - TARGET)) < 0.01

    stream_until(graph, operator, names, TARGET, seconds=5.0, until=arrived)
    reported = positions_by_name(monitor.states[-1:], names)[0]
    assert np.max(np.abs(reported - TARGET)) < 0.01, f"/joint_states show {reported}, not {TARGET}"
    assert fake.rejected == 0
    assert all(duration_to_sec(m.points[0].time_from_start) == pytest.approx(0.05)
               and len(m.points) == 1 for _, m in fake.messages), "not one-point setpoints at the lookahead"
    assert latest_safety(monitor)["fault"] == ""


def test_controller_gets_only_finite_margin_clamped_positions(graph):
    control, fake, monitor, operator = start(graph)
    names = control.joint_names
    model = control.arm.model
    margin = np.where(model.prismatic[: len(names)], 0.001, 0.1)
    lower, upper = model.lower[: len(names)] + margin, model.upper[: len(names)] - margin
    stream(graph, operator, names, FAR, seconds=1.0)
    bad = list(TARGET)
    bad[3] = float("nan")
    stream(graph, operator, names, bad, seconds=0.3)
    stream(graph, operator, names, TARGET, seconds=0.3)  # after the fault: ignored
    graph.spin(duration=1.0, until=lambda: "non-finite" in latest_safety(monitor).get("fault", ""))

    assert fake.messages, "the controller received nothing, so the test proves nothing"
    assert fake.rejected == 0
    assert all(list(m.joint_names) == names and len(m.points) == 1 for _, m in fake.messages)
    _, sent = streamed(fake)
    assert np.all(np.isfinite(sent)), "a non-finite setpoint reached the controller"
    assert np.all(sent >= lower - 1e-9) and np.all(sent <= upper + 1e-9), "a setpoint left the safety margins"
    finger = names.index("finger_left")
    assert sent[:, finger].max() == pytest.approx(upper[finger], abs=1e-9), "the out-of-limit clamp never engaged"
    states = positions_by_name(monitor.states, names)
    assert np.all(states >= lower - 1e-9) and np.all(states <= upper + 1e-9)
    safety = latest_safety(monitor)
    assert "non-finite" in safety["fault"] and safety["_level"] == ERROR


def test_nothing_is_sent_before_joint_states_arrive(graph):
    initial = RobotConfig().home_positions()
    initial[[0, 3, 7]] += [0.4, -0.3, -0.01]  # not home: a guessed start would show
    control, fake, monitor, operator = start(graph, initial=initial, paused=True)
    names = control.joint_names
    stream(graph, operator, names, TARGET, seconds=1.0)
    assert control.counts["rejected"] > 0, "control_node never saw the commands"
    assert fake.messages == [], "control_node commanded the arm before knowing where it is"
    assert control.arm.filter is None and monitor.applied == []

    fake.resume_states()
    graph.spin(duration=2.0, until=lambda: fake.messages)
    _, sent = streamed(fake)
    assert len(sent) > 0, "control_node never started streaming after joint states arrived"
    assert np.max(np.abs(sent[0] - initial)) < 1e-9, f"first setpoint {sent[0]} is not the measured {initial}"


def test_stale_joint_states_latch_a_fault_and_hold_until_reset(graph):
    control, fake, monitor, operator = start(graph)
    names = control.joint_names
    stream(graph, operator, names, GOAL, seconds=0.5)
    paused_at = time.monotonic()
    fake.pause_states()

    def faulted():
        return "joint_states" in latest_safety(monitor).get("fault", "")

    stream_until(graph, operator, names, GOAL, seconds=2.0, until=faulted)
    assert faulted(), f"no joint-states fault on /diagnostics: {latest_safety(monitor)}"
    faulted_at = time.monotonic()
    assert faulted_at - paused_at < 0.5 + 0.4, "the fault latched long after the state timeout"
    safety = latest_safety(monitor)
    assert safety["_level"] == ERROR and safety["hold_reason"] == "fault"
    stream(graph, operator, names, GOAL, seconds=0.5)  # commands keep coming: ignored
    times, held = streamed(fake, since=faulted_at)
    # Faulted: control_node stops streaming and the controller holds by itself (at most one
    # setpoint already in flight when the fault was reported).
    assert len(held) <= 1, f"control_node kept streaming {len(held)} setpoints after the fault"
    _, before = streamed(fake, since=paused_at - 0.5)
    assert np.ptp(before, axis=0).max() > 0.1, "the arm was not moving, so the hold proves nothing"
    assert np.max(np.abs(before[-1] - GOAL)) > 0.1, "the arm reached the goal before the fault"

    fake.resume_states()
    graph.spin(duration=1.0, until=lambda: control.arm.state_age() < 0.05)
    stream(graph, operator, names, GOAL, seconds=0.3)  # fresh states alone do not clear the fault
    assert faulted()
    call_reset(graph, operator)
    reset_at = time.monotonic()

    def arrived():
        return np.max(np.abs(fake.positions - GOAL)) < 0.01

    stream_until(graph, operator, names, GOAL, seconds=5.0, until=arrived)
    _, after = streamed(fake, since=reset_at)
    assert np.ptp(after, axis=0).max() > 0.1, "motion did not resume after reset and a new command"
    assert arrived(), f"the arm stopped at {fake.positions}, not {GOAL}"
    assert latest_safety(monitor)["fault"] == ""


def test_control_node_does_not_publish_joint_states(graph):
    control, fake, monitor, operator = start(graph)
    graph.spin(duration=0.5)
    publishers = [info.node_name for info in control.get_publishers_info_by_topic("/joint_states")]
    assert publishers == [fake.get_name()], f"/joint_states publishers: {publishers}"
    assert monitor.states and all(names == fake.joint_names for _, names, _ in monitor.states)
