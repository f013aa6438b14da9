"""The whole teleoperation graph in simulation: capture_node -> policy_node -> control_node (PyBullet).

    ros2 launch lam sim.launch.py                                   # a mocap clip drives the sim arm
    ros2 launch lam sim.launch.py source:=camera:0 gui:=true        # you drive it, with the GUI
    ros2 launch lam sim.launch.py params:=/path/panda_overlay.yaml  # e.g. another robot

Each node loads the package's parameter file (config/capture.yaml, policy.yaml, control.yaml),
then the optional `params` overlay, then the launch arguments below.
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
    urdf = LaunchConfiguration("urdf").perform(context)
    robot = {"urdf": urdf} if urdf else {}
    gui = LaunchConfiguration("gui").perform(context).strip().lower() == "true"

    def files(name):
        return [os.path.join(config, name)] + ([overlay] if overlay else [])

    return [
        Node(package=PACKAGE, executable="capture_node", name="capture_node", output="screen",
             parameters=files("capture.yaml") + [{"source": LaunchConfiguration("source").perform(context)}]),
        Node(package=PACKAGE, executable="policy_node", name="policy_node", output="screen",
             parameters=files("policy.yaml") + [robot]),
        Node(package=PACKAGE, executable="control_node", name="control_node", output="screen",
             parameters=files("control.yaml") + [dict(robot, backend="sim", gui=gui)]),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("source", default_value="mocap:punch",
                              description="Operator source for capture_node: camera:N, video:PATH, image:PATH "
                              "or mocap:CLIP."),
        DeclareLaunchArgument("urdf", default_value="",
                              description="Robot URDF for policy_node and control_node (a path or "
                              "'pybullet_data:REL'); empty keeps the parameter files' robot."),
        DeclareLaunchArgument("params", default_value="",
                              description="Optional parameter YAML overlay applied to every node after the "
                              "package's config/*.yaml."),
        DeclareLaunchArgument("gui", default_value="false", choices=["true", "false"],
                              description="Open the PyBullet GUI window (needs a display)."),
        OpaqueFunction(function=_nodes),
    ])
