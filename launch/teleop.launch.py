"""Teleoperate a physical arm: camera -> capture_node -> policy_node -> control_node -> ros2_control.

    ros2 launch lam teleop.launch.py                                  # camera:0, the project's arm
    ros2 launch lam teleop.launch.py source:=camera:2 mirrored:=true
    ros2 launch lam teleop.launch.py urdf:=/path/my_arm.urdf params:=/path/my_arm.yaml

Start the arm's ros2_control stack first (controller_manager with joint_state_broadcaster and a
joint_trajectory_controller, see config/ros2_control_jtc.yaml). control_node streams filtered
setpoints to `controller_topic` with the physical-arm Cartesian cap (250 mm/s by default), and
policy_node only moves the arm while the operator is engaged (engage: gesture by default here).
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
    mirrored = LaunchConfiguration("mirrored").perform(context).strip().lower() == "true"

    def files(name):
        return [os.path.join(config, name)] + ([overlay] if overlay else [])

    return [
        Node(package=PACKAGE, executable="capture_node", name="capture_node", output="screen",
             parameters=files("capture.yaml") + [{"source": LaunchConfiguration("source").perform(context),
                                                  "mirrored": mirrored}]),
        Node(package=PACKAGE, executable="policy_node", name="policy_node", output="screen",
             parameters=files("policy.yaml") + [dict(robot, engage="gesture")]),
        Node(package=PACKAGE, executable="control_node", name="control_node", output="screen",
             parameters=files("control.yaml") + [dict(
                 robot, backend="ros2_control",
                 controller_topic=LaunchConfiguration("controller_topic").perform(context))]),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("source", default_value="camera:0",
                              description="Camera (or other source) seeing the operator, e.g. camera:0."),
        DeclareLaunchArgument("mirrored", default_value="false", choices=["true", "false"],
                              description="Whether the camera image is mirrored (selfie view)."),
        DeclareLaunchArgument("urdf", default_value="",
                              description="The physical arm's URDF; empty keeps the parameter files' robot."),
        DeclareLaunchArgument("params", default_value="",
                              description="Optional parameter YAML overlay for every node (joint names, links, "
                              "limits of your arm)."),
        DeclareLaunchArgument("controller_topic", default_value="/joint_trajectory_controller/joint_trajectory",
                              description="The joint_trajectory_controller command topic of the arm."),
        OpaqueFunction(function=_nodes),
    ])
