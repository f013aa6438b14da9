"""Graph's private domains and its check for another graph's publishers, on real rclpy and DDS."""
import time

import pytest
import rclpy
from sensor_msgs.msg import JointState

from lam_control.monitor_node import MonitorNode
from lam_control.ros_graph import PRIVATE_DOMAINS, ForeignWatch, Graph
from ros_helpers import domain_id


def test_private_graphs_avoid_a_domain_in_use():
    with Graph(private=True) as busy:
        busy.add(MonitorNode)
        assert busy.domain_id in PRIVATE_DOMAINS
        chosen = []
        for _ in range(6):
            with Graph(private=True) as other:
                chosen.append(other.domain_id)
        assert busy.domain_id not in chosen and all(d in PRIVATE_DOMAINS for d in chosen)


def test_a_graph_without_private_uses_the_domain_it_is_given():
    with Graph(domain_id=domain_id()) as graph:
        assert graph.domain_id == domain_id()
    with pytest.raises(ValueError, match="not both"):
        Graph(domain_id=domain_id(), private=True)


def test_foreign_publishers_are_counted_and_the_graphs_own_are_not():
    with Graph(private=True) as graph:
        graph.add(MonitorNode)
        watch = ForeignWatch(graph, ["/joint_states", "/lam/joint_command"], period=0.0)
        watch.poll()
        assert watch.found == {}
        with Graph(domain_id=graph.domain_id) as intruder:
            node = rclpy.create_node("intruder", context=intruder.context)
            intruder.nodes.append(node)
            node.create_publisher(JointState, "/joint_states", 10)
            deadline = time.monotonic() + 5.0
            while not watch.found and time.monotonic() < deadline:
                time.sleep(0.05)
                watch.poll()
        assert watch.found == {"/joint_states": 1}
        time.sleep(0.5)
        watch.poll()
        assert watch.found == {"/joint_states": 1}, "an intruder that left must still count"
