"""Start capture_node: operator keypoints on /lam/keypoints from a camera, video, image or mocap clip.

    ros2 launch lam capture.launch.py                                  # camera:0
    ros2 launch lam capture.launch.py source:=mocap:punch              # no camera: a mocap clip
    ros2 launch lam capture.launch.py source:=camera:2 mirrored:=true  # a selfie-view webcam

The parameter file is loaded first; the launch arguments below override it.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "lam"


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "capture.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params", default_value=default_params,
                              description="ROS 2 parameter YAML for capture_node; default: the package's "
                              "config/capture.yaml."),
        DeclareLaunchArgument("source", default_value="camera:0",
                              description="Operator source: camera:N, video:PATH, image:PATH or mocap:CLIP."),
        DeclareLaunchArgument("mirrored", default_value="false", choices=["true", "false"],
                              description="Whether the camera image is mirrored (selfie view)."),
        Node(
            package=PACKAGE,
            executable="capture_node",
            name="capture_node",  # must match the top-level key in the parameter YAML
            output="screen",
            parameters=[LaunchConfiguration("params"),
                        {"source": ParameterValue(LaunchConfiguration("source"), value_type=str),
                         "mirrored": ParameterValue(LaunchConfiguration("mirrored"), value_type=bool)}],
        ),
    ])
