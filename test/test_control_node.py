"""control_node on real rclpy: commands reach the sim arm, bad commands never do, stops hold."""

import numpy as np
import pytest
from rclpy.parameter import Parameter

from lam_control.control_node import ControlNode
from lam_control.monitor_node import MonitorNode
from lam_control.resources import share_file
from lam_control.ros_graph import Graph
from ros_helpers import Operator, domain_id, positions_by_name, stream

TARGET = [0.3, 0.7, -0.2, 1.2, 0.3, 0.8, 0.1, 0.02, 0.02]


@pytest.fixture
def graph():
    with Graph([share_file("config/control.yaml")], domain_id=domain_id()) as g:
        yield g


@pytest.fixture
def nodes(graph):
    control = graph.add(ControlNode)
    monitor = graph.add(MonitorNode)
    operator = graph.add(Operator)
    graph.spin(duration=0.5, until=lambda: operator.cmd.get_subscription_count() > 0 and monitor.states)
    assert operator.cmd.get_subscription_count() > 0, "control_node never subscribed to /lam/joint_command"
    return control, monitor, operator


def latest_safety(monitor):
    entries = [d for _, d in monitor.diagnostics if d["_name"] == "lam control: safety"]
    return entries[-1] if entries else None


def test_trajectory_reaches_sim_arm_and_joint_states(graph, nodes):
    control, monitor, operator = nodes
    names = control.joint_names
    stream(graph, operator, names, TARGET, seconds=3.0)
    measured = control.arm.read_state().positions
    assert np.max(np.abs(measured - TARGET)) < 0.01
    reported = positions_by_name(monitor.states, names)[-1]
    assert np.max(np.abs(reported - TARGET)) < 0.01
    assert latest_safety(monitor)["fault"] == ""


def test_out_of_limit_and_nan_commands_hold_within_limits_and_fault(graph, nodes):
    control, monitor, operator = nodes
    names = control.joint_names
    model = control.arm.model
    lower, upper = model.lower[: len(names)], model.upper[: len(names)]
    far = [10.0, -10.0, 10.0, 10.0, -10.0, 10.0, -10.0, 1.0, -1.0]
    stream(graph, operator, names, far, seconds=2.0)
    states = positions_by_name(monitor.states, names)
    assert np.all(np.isfinite(states))
    assert np.all(states >= lower - 1e-3) and np.all(states <= upper + 1e-3), "a joint left its URDF limits"
    held = control.arm.read_state().positions
    margin = np.where(model.prismatic[: len(names)], 0.001, 0.1)
    assert np.all(held >= lower + margin - 0.01) and np.all(held <= upper - margin + 0.01)

    graph.spin(duration=0.5)  # the watchdog holds it; let the arm settle before the NaN
    before = control.arm.read_state().positions
    n_before = len(monitor.states)
    bad = list(TARGET)
    bad[3] = float("nan")
    stream(graph, operator, names, bad, seconds=0.3)
    stream(graph, operator, names, TARGET, seconds=0.7)  # a valid command after NaN must not move it
    graph.spin(duration=1.0, until=lambda: (latest_safety(monitor) or {}).get("fault"))
    after = positions_by_name(monitor.states[n_before:], names)
    assert np.all(np.isfinite(after))
    assert np.max(np.abs(after - before)) < 0.01, "the arm moved after a NaN command"
    safety = latest_safety(monitor)
    assert "non-finite" in safety["fault"]
    assert safety["_level"] == 2  # ERROR


def test_watchdog_holds_within_100ms_when_commands_stop(graph, nodes):
    control, monitor, operator = nodes
    names = control.joint_names
    start = control.arm.read_state().positions
    goal = start.copy()
    goal[0] += 1.2  # far enough that motion is still under way when commands stop
    for _ in range(10):  # a 3 s chunk, refreshed for 0.5 s, then silence mid-chunk
        operator.send_chunk(names, [3.0], [goal])
        graph.spin(duration=0.05)
    stopped_at = operator.last_sent
    graph.spin(duration=0.6)
    applied = [(t, q) for t, _, q in monitor.applied if t > stopped_at]
    times = np.array([t for t, _ in applied])
    q = positions_by_name([(t, names, q) for t, q in applied], names)
    moving = np.any(np.abs(np.diff(q, axis=0)) > 1e-9, axis=1)
    last_motion = times[1:][moving].max() if moving.any() else stopped_at
    assert last_motion - stopped_at <= 0.1 + 0.03, f"still commanding motion {last_motion - stopped_at:.3f} s later"
    assert abs(q[-1, 0] - start[0]) > 0.05, "the arm never moved, so the test proves nothing"
    assert np.abs(control.arm.read_state().velocities[:7]).max() < 0.02
    assert latest_safety(monitor)["hold_reason"] == "watchdog"


def test_estop_latches_until_reset_and_motion_needs_a_new_command(graph, nodes):
    control, monitor, operator = nodes
    names = control.joint_names
    stream(graph, operator, names, TARGET, seconds=0.3)
    operator.estop()
    graph.spin(duration=0.2)
    frozen = control.arm.read_state().positions
    stream(graph, operator, names, TARGET, seconds=1.0)  # commands keep coming: ignored
    assert np.max(np.abs(control.arm.read_state().positions - frozen)) < 0.01
    assert latest_safety(monitor)["estop"] == "True"

    assert operator.reset_client.wait_for_service(timeout_sec=2.0)
    future = operator.reset_client.call_async(__import__("std_srvs.srv", fromlist=["Trigger"]).Trigger.Request())
    graph.spin(duration=2.0, until=future.done)
    assert future.done() and future.result().success
    graph.spin(duration=0.5)  # no new command: must not resume on its own
    assert np.max(np.abs(control.arm.read_state().positions - frozen)) < 0.01
    stream(graph, operator, names, TARGET, seconds=3.0)
    assert np.max(np.abs(control.arm.read_state().positions - TARGET)) < 0.01


def test_panda_by_parameters(graph):
    """Any URDF by parameters: the Panda overlay drives pybullet_data's Franka."""
    graph_params = [Parameter("urdf", value="pybullet_data:franka_panda/panda.urdf"),
                    Parameter("joint_names", value=[f"panda_joint{i}" for i in range(1, 8)]),
                    Parameter("gripper_joints", value=["panda_finger_joint1", "panda_finger_joint2"]),
                    Parameter("ee_link", value="panda_grasptarget"),
                    Parameter("home", value=[0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])]
    control = graph.add(ControlNode, parameter_overrides=graph_params)
    operator = graph.add(Operator)
    graph.spin(duration=0.5, until=lambda: operator.cmd.get_subscription_count() > 0)
    target = [0.2, -0.1, 0.1, -1.9, 0.1, 1.8, 0.6, 0.02, 0.02]
    stream(graph, operator, control.joint_names, target, seconds=3.0)
    assert np.max(np.abs(control.arm.read_state().positions - target)) < 0.01


def test_bad_parameters_fail_with_a_clear_error(graph):
    from lam_control.ros_graph import GraphError

    with pytest.raises(GraphError, match="backend"):
        graph.add(ControlNode, parameter_overrides=[Parameter("backend", value="warp_drive")])
    with pytest.raises(GraphError, match="no_such_joint"):
        graph.add(ControlNode, parameter_overrides=[
            Parameter("joint_names", value=["no_such_joint"]), Parameter("home", value=[0.0])])
