"""Start control_node: the safety filter between the policy and the arm (PyBullet or ros2_control).

    ros2 launch lam control.launch.py                                # sim, the project's arm
    ros2 launch lam control.launch.py backend:=ros2_control          # a real arm's JTC
    ros2 launch lam control.launch.py params:=/path/to/my_control.yaml gui:=true

The parameter file is loaded first; the launch arguments below override it. `urdf` overrides
only when it is non-empty, so a parameter file that names its own robot keeps it.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "lam"


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def _control_node(context, *args, **kwargs):
    """Build the node once the launch arguments are known (empty `urdf` must not override)."""
    overrides = {
        "backend": LaunchConfiguration("backend").perform(context),
        "gui": _truthy(LaunchConfiguration("gui").perform(context)),
    }
    urdf = LaunchConfiguration("urdf").perform(context)
    if urdf:
        overrides["urdf"] = urdf
    return [
        Node(
            package=PACKAGE,
            executable="control_node",
            name="control_node",  # must match the top-level key in the parameter YAML
            output="screen",
            emulate_tty=True,
            parameters=[LaunchConfiguration("params").perform(context), overrides],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "control.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params",
                default_value=default_params,
                description="ROS 2 parameter YAML for control_node (a 'control_node: ros__parameters:' "
                "section); default: the package's config/control.yaml.",
            ),
            DeclareLaunchArgument(
                "backend",
                default_value="sim",
                choices=["sim", "ros2_control"],
                description="Arm backend: 'sim' drives the PyBullet arm, 'ros2_control' streams "
                "JointTrajectory to a real arm's joint_trajectory_controller.",
            ),
            DeclareLaunchArgument(
                "urdf",
                default_value="",
                description="Robot URDF: a file path or 'pybullet_data:REL'; empty keeps the "
                "parameter file's value (which defaults to the package's urdf/lam_arm.urdf).",
            ),
            DeclareLaunchArgument(
                "gui",
                default_value="false",
                choices=["true", "false"],
                description="Open the PyBullet GUI window (sim backend only; needs a display).",
            ),
            OpaqueFunction(function=_control_node),
        ]
    )
