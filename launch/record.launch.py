"""Record demonstrations: capture_node -> policy_node -> control_node (sim task) + record_node.

    ros2 launch lam record.launch.py task:=reach source:=scripted:reach out_dir:=/data/reach
    ros2 service call /lam/task/reset std_srvs/srv/Trigger       # new seed, objects re-placed
    ros2 service call /lam/episode/start std_srvs/srv/Trigger    # then stop, mark_success, discard

Each node loads the package's parameter file (config/*.yaml), then the optional `params`
overlay, then the launch arguments below. `lam record` runs the same graph with a session
driver that resets, starts and stops episodes for you.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "lam"


def _nodes(context, *args, **kwargs):
    config = os.path.join(get_package_share_directory(PACKAGE), "config")
    overlay = LaunchConfiguration("params").perform(context)
    task = LaunchConfiguration("task").perform(context)
    seed = int(LaunchConfiguration("seed").perform(context))

    def files(name):
        return [os.path.join(config, name)] + ([overlay] if overlay else [])

    return [
        Node(package=PACKAGE, executable="capture_node", name="capture_node", output="screen",
             parameters=files("capture.yaml") + [{"source": LaunchConfiguration("source").perform(context)}]),
        Node(package=PACKAGE, executable="policy_node", name="policy_node", output="screen",
             parameters=files("policy.yaml")),
        Node(package=PACKAGE, executable="control_node", name="control_node", output="screen",
             parameters=files("control.yaml") + [{"backend": "sim", "task": task, "task_seed": seed}]),
        Node(package=PACKAGE, executable="record_node", name="record_node", output="screen",
             parameters=files("record.yaml") + [{"out_dir": LaunchConfiguration("out_dir").perform(context)}]),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("task", default_value="reach", choices=["reach", "push", "pick_place"],
                              description="Sim task control_node sets up and publishes on /lam/object_poses."),
        DeclareLaunchArgument("seed", default_value="0",
                              description="Seed of the first task reset; each /lam/task/reset adds one."),
        DeclareLaunchArgument("source", default_value="scripted:reach",
                              description="Operator source for capture_node: camera:N, video:PATH, "
                              "mocap:CLIP or scripted:TASK."),
        DeclareLaunchArgument("out_dir", default_value="recordings",
                              description="Folder that receives one rosbag2 MCAP folder per episode."),
        DeclareLaunchArgument("params", default_value="",
                              description="Optional parameter YAML overlay applied to every node after the "
                              "package's config/*.yaml."),
        OpaqueFunction(function=_nodes),
    ])
