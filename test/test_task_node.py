"""control_node with a sim task on real rclpy: object poses, success, episodes and the reset service;
and the whole graph teleoperated by the scripted operator (capture -> policy -> control)."""
import json

import numpy as np
import pytest
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from lam_capture.capture_node import CaptureNode
from lam_control.control_node import ControlNode
from lam_control.resources import share_file
from lam_control.ros_convert import poses_from_msg
from lam_control.ros_graph import Graph
from lam_control.ros_qos import LATCHED_QOS, SENSOR_QOS
from lam_policy.policy_node import PolicyNode
from ros_helpers import domain_id


class TaskWatcher(Node):
    """An outside node reading the task topics and calling /lam/task/reset."""

    def __init__(self, **kwargs):
        super().__init__("task_watcher", **kwargs)
        self.poses, self.success, self.episodes = [], [], []
        self.create_subscription(PoseArray, "/lam/object_poses", self.poses.append, SENSOR_QOS)
        self.create_subscription(Bool, "/lam/task/success", lambda m: self.success.append(m.data), LATCHED_QOS)
        self.create_subscription(String, "/lam/task/episode", lambda m: self.episodes.append(json.loads(m.data)),
                                 LATCHED_QOS)
        self.reset_client = self.create_client(Trigger, "/lam/task/reset")


def call_reset(graph, watcher):
    assert watcher.reset_client.wait_for_service(timeout_sec=2.0)
    future = watcher.reset_client.call_async(Trigger.Request())
    graph.spin(duration=3.0, until=future.done)
    assert future.done(), "/lam/task/reset did not answer within 3 s"
    return future.result()


def test_task_topics_and_reset_service():
    with Graph([share_file("config/control.yaml")], domain_id=domain_id()) as graph:
        control = graph.add(ControlNode, parameter_overrides=[Parameter("task", value="reach"),
                                                              Parameter("task_seed", value=5)])
        watcher = graph.add(TaskWatcher)
        graph.spin(duration=5.0, until=lambda: len(watcher.poses) > 20 and watcher.success and watcher.episodes)
        assert watcher.episodes and watcher.episodes[-1] == {"task": "reach", "seed": 5}
        assert watcher.success and watcher.success[-1] is False
        msg = watcher.poses[-1]
        assert msg.header.frame_id == "base_link" and len(msg.poses) == 1
        assert msg.header.stamp.sec > 0
        first = poses_from_msg(msg)
        assert np.allclose(first, control.task.object_poses(), atol=1e-9)
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in watcher.poses[-20:]]
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        assert rate > 50.0, f"/lam/object_poses at {rate:.0f} Hz"

        for expected_seed in (5, 6, 7):  # the first reset re-places the start-up scene (task_seed)
            answer = call_reset(graph, watcher)
            assert answer.success and json.loads(answer.message) == {"task": "reach", "seed": expected_seed}
            count = len(watcher.poses)
            graph.spin(duration=2.0, until=lambda: len(watcher.poses) > count + 5
                       and watcher.episodes[-1]["seed"] == expected_seed)
            assert watcher.episodes[-1] == {"task": "reach", "seed": expected_seed}
            now = poses_from_msg(watcher.poses[-1])
            if expected_seed == 5:
                assert np.allclose(now, first, atol=1e-6), "the same seed must give the same scene"
            else:
                assert np.abs(now - first).max() > 0.01, "a reset with a new seed left the scene as it was"
            first = now
        assert control.task.seed == 7


def test_bad_task_parameter_is_refused():
    with Graph([share_file("config/control.yaml")], domain_id=domain_id()) as graph:
        with pytest.raises(Exception, match="valid tasks"):
            graph.add(ControlNode, parameter_overrides=[Parameter("task", value="stack")])


def test_scripted_operator_teleoperates_reach_through_the_three_nodes():
    """capture_node (scripted:reach) -> policy_node (retarget) -> control_node (task reach): the
    task succeeds in real time, then again after /lam/task/reset starts a new episode."""
    params = [share_file(f"config/{name}.yaml") for name in ("control", "capture", "policy")]
    with Graph(params, domain_id=domain_id()) as graph:
        graph.add(ControlNode, parameter_overrides=[Parameter("task", value="reach")])
        graph.add(PolicyNode)
        capture = graph.add(CaptureNode, parameter_overrides=[Parameter("source", value="scripted:reach"),
                                                              Parameter("publish_skeleton", value=False)])
        watcher = graph.add(TaskWatcher)
        for episode in range(2):
            if episode:
                assert call_reset(graph, watcher).success  # the first reset re-places seed 0
                assert call_reset(graph, watcher).success  # the next one is seed 1
                graph.spin(duration=2.0, until=lambda: capture.pipeline.source.operator.episode_seed == 1)
                assert capture.pipeline.source.operator.episode_seed == 1, "the operator never saw the new episode"
                graph.spin(duration=1.0, until=lambda: watcher.success and watcher.success[-1] is False)
            graph.spin(duration=20.0, until=lambda: watcher.success and watcher.success[-1] is True)
            assert watcher.success and watcher.success[-1] is True, f"episode {episode}: reach not achieved in 20 s"
