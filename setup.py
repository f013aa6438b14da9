"""One setup.py for both worlds: an ament_python ROS 2 package and a pip package."""
from glob import glob

from setuptools import setup

PACKAGE = "lam"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="LAM stack: ROS 2 teleoperation and imitation learning for robot arms",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=["lam_capture", "lam_policy", "lam_control"],
    python_requires=">=3.10",
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*.urdf")),
    ],
    include_package_data=True,
    # Pinned where it matters (see ARCHITECTURE.md): an unpinned torch pulls gigabytes of CUDA
    # wheels, and mediapipe 0.10.21 is the last release that carries its models in the wheel.
    install_requires=[
        "numpy>=1.24,<2",
        "pybullet==3.2.7",
        "PyYAML>=6",
        "imageio>=2.31",
        "imageio-ffmpeg>=0.5",
        "torch==2.13.0",  # a local CPU wheel here; never unpinned (see above)
        "mediapipe==0.10.21",
        "safetensors>=0.4",
        "rosbags>=0.11,<0.12",  # recorder.py flushes McapWriter chunks itself (an internal API)
        "pyarrow>=15,<22",  # LeRobot export; >=22 needs numpy 2
        "scikit-image>=0.22",
    ],
    extras_require={
        # rclpy and messages as wheels, for machines without a system ROS 2. On a robot with
        # ROS 2 installed do NOT install this extra: rclpy must come from the system.
        "ros": [
            "ros-kilted-rclpy[fastrtps]==9.1.2",
            "ros-kilted-sensor-msgs",
            "ros-kilted-trajectory-msgs",
            "ros-kilted-geometry-msgs",
            "ros-kilted-std-msgs",
            "ros-kilted-std-srvs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-builtin-interfaces",
            "ros-visualization-msgs==5.5.1",
        ],
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3"],
    },
    entry_points={
        "console_scripts": [
            "control_node = lam_control.control_node:main",
            "capture_node = lam_capture.capture_node:main",
            "policy_node = lam_policy.policy_node:main",
            "record_node = lam_control.record_node:main",
            "lam = lam_control.cli:main",
        ],
    },
)
