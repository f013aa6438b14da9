"""policy_node: operator keypoints (and joint states) in, joint commands out.

Mode ``retarget`` maps the operator's arm to the robot by retargeting + IK, one command per new
keypoint frame. Mode ``lam`` runs a learned policy checkpoint (lam_policy.runtime) on a timer at
the checkpoint's control rate, on the latest observations, and publishes action chunks.
"""
from __future__ import annotations

import json
import time
from collections import Counter, deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from lam_capture.ros_keypoints import CloudError, cloud_to_keypoints
from lam_control.robot import RobotConfig
from lam_control.ros_convert import diagnostic_status, trajectory_msg
from lam_control.ros_params import declare_parameters
from lam_control.ros_qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS
from lam_policy.gestures import GripperConfig
from lam_policy.retarget import RetargetConfig, Retargeter

# Latest keypoints only: a backlog of old frames would only add latency.
KEYPOINTS_IN_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
MODES = ("retarget", "lam")

PARAMETERS = {  # name: (default, description); see config/policy.yaml
    "mode": ("retarget", "retarget (operator -> IK) | lam (learned policy checkpoint)"),
    "checkpoint": ("", "lam mode: checkpoint folder (safetensors + JSON)"),
    "device": ("auto", "lam mode: auto (CUDA when present, else CPU) | cpu | cuda"),
    "urdf": ("", "URDF, as for control_node"),
    "joint_names": (RobotConfig().joint_names, "arm joints, in command order"),
    "gripper_joints": (RobotConfig().gripper_joints, "finger joints"),
    "ee_link": (RobotConfig().ee_link, "TCP link"),
    "gripper_open": (RobotConfig().gripper_home, "m, finger position when open"),
    "gripper_closed": (RobotConfig().gripper_closed, "m, finger position when closed (inside the safety margin)"),
    "arm": ("right", "operator arm that drives the robot: left | right"),
    "mirror": (False, "robot moves as the operator's mirror image"),
    "robot_shoulder_link": ("shoulder_pitch_link", "robot link matched to the operator's shoulder"),
    "robot_elbow_link": ("elbow_link", "robot link steered by the operator's elbow ('' = none)"),
    "scale": (0.0, "operator->robot scale; 0 = calibrate from arm lengths"),
    "robot_reach": (0.0, "m, shoulder link -> TCP with the arm stretched; 0 = from the URDF's zero pose"),
    "neutral_offset": ([0.2, 0.0, 0.35], "m, robot frame: operator shoulder relative to the robot's"),
    "calibration_frames": (10, "frames used to measure the operator's arm"),
    "orientation": (True, "drive the TCP orientation from the hand"),
    "anchor_decay": (1.0, "s, time constant of the re-anchoring offset (0 = keep)"),
    "path_lag": (RetargetConfig().path_lag, "s an arm slower than the operator may fall behind to follow "
                                            "their path instead of cutting across (0 = aim at the newest point)"),
    "path_lookahead": (RetargetConfig().path_lookahead, "m along the path ahead of the arm it aims at"),
    "engage": ("always", "always | gesture (other hand above the nose) | service (/lam/engage)"),
    "pinch_close": (0.03, "m, thumb-index distance that closes the gripper"),
    "pinch_open": (0.05, "m, distance that opens it again"),
    "command_horizon": (0.05, "s, time_from_start of each command point"),
    "diagnostics_rate": (1.0, "Hz"),
}


class PolicyNode(Node):
    """Turns operator keypoints into arm commands.

    Subscribes: /lam/keypoints (sensor_msgs/PointCloud2, latest only), /joint_states
    (sensor_msgs/JointState, SENSOR_QOS). Publishes: /lam/joint_command
    (trajectory_msgs/JointTrajectory, COMMAND_QOS; header.stamp = the keypoints' capture time),
    /diagnostics (latency capture -> command, tracking, IK error). Service: /lam/engage
    (std_srvs/SetBool) for engage: service. Frames with non-finite values are rejected whole.
    """

    def __init__(self, **kwargs):
        super().__init__("policy_node", **kwargs)
        try:
            self._setup()
        except Exception:
            self.destroy_node()  # leave nothing half-built in the context
            raise

    def _setup(self) -> None:
        get = declare_parameters(self, PARAMETERS)
        self.mode = get("mode")
        if self.mode not in MODES:
            raise ValueError(f"parameter mode must be one of {MODES}, got {self.mode!r}")
        self.robot = RobotConfig(urdf=get("urdf"), joint_names=list(get("joint_names")),
                                 gripper_joints=list(get("gripper_joints") or []), ee_link=get("ee_link"),
                                 home=[0.0] * len(get("joint_names")), gripper_home=float(get("gripper_open")),
                                 gripper_closed=float(get("gripper_closed")))
        self.retargeter = Retargeter(self.robot, RetargetConfig(
            arm=get("arm"), mirror=bool(get("mirror")), robot_shoulder_link=get("robot_shoulder_link"),
            robot_elbow_link=get("robot_elbow_link"), scale=float(get("scale")),
            neutral_offset=[float(v) for v in get("neutral_offset")], robot_reach=float(get("robot_reach")),
            calibration_frames=int(get("calibration_frames")), orientation=bool(get("orientation")),
            anchor_decay=float(get("anchor_decay")), engage=get("engage"), path_lag=float(get("path_lag")),
            path_lookahead=float(get("path_lookahead")),
            gripper=GripperConfig(close_below=float(get("pinch_close")), open_above=float(get("pinch_open")))))
        self.horizon = float(get("command_horizon"))
        self.names = self.robot.command_joints
        self.runtime = None
        if self.mode == "lam":
            from lam_policy.runtime import LamRuntime

            if not get("checkpoint"):
                raise ValueError("mode lam needs the checkpoint parameter (a checkpoint folder)")
            self.runtime = LamRuntime(get("checkpoint"), self.names, device=get("device"), robot=self.robot)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._q = np.full(len(self.names), np.nan)
        self.counts: Counter = Counter()
        self.latency: deque = deque(maxlen=500)  # s, capture -> command publish
        self.compute: deque = deque(maxlen=500)  # s, retargeting + IK per frame
        self.ik_error: deque = deque(maxlen=500)
        self.cmd_pub = self.create_publisher(JointTrajectory, "/lam/joint_command", COMMAND_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", STATE_QOS)
        self.create_subscription(PointCloud2, "/lam/keypoints", self._on_keypoints, KEYPOINTS_IN_QOS)
        self.create_subscription(JointState, "/joint_states", self._on_joint_states, SENSOR_QOS)
        self.create_service(SetBool, "/lam/engage", self._on_engage)
        if self.runtime is not None:
            self.create_subscription(PoseArray, "/lam/object_poses", self._on_object_poses, SENSOR_QOS)
            self.create_subscription(String, "/lam/events", self._on_event, STATE_QOS)
            self.create_service(Trigger, "/lam/policy/reset", self._on_policy_reset)
            # Inference on its own timer and callback group: subscriptions only cache observations.
            self.create_timer(1.0 / self.runtime.fps, self._on_inference,
                              callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0 / float(get("diagnostics_rate")), self.publish_diagnostics)
        self.get_logger().info(f"policy_node up: mode={self.mode}, arm={get('arm')}, engage={get('engage')}")

    def _on_joint_states(self, msg: JointState) -> None:
        if self.runtime is not None:
            self.runtime.update_state(msg.name, msg.position, time.monotonic())
        for name, value in zip(msg.name, msg.position):
            i = self._index.get(name)
            if i is not None and np.isfinite(value):
                self._q[i] = value

    def _on_object_poses(self, msg: PoseArray) -> None:
        poses = np.array([[p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y,
                           p.orientation.z, p.orientation.w] for p in msg.poses])
        try:
            self.runtime.update_objects(poses)
        except ValueError as exc:
            self.counts["rejected_objects"] += 1
            self.get_logger().warning(str(exc), throttle_duration_sec=2.0)

    def _on_event(self, msg: String) -> None:
        try:
            event = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        if isinstance(event, dict) and event.get("event") == "task_reset":
            self.runtime.reset()  # a new episode: no history from the last one

    def _on_policy_reset(self, _request, response: Trigger.Response) -> Trigger.Response:
        self.runtime.reset()
        response.success, response.message = True, "policy history cleared"
        return response

    def _on_inference(self) -> None:
        now = time.monotonic()
        try:
            plan = self.runtime.step(now)
        except ValueError as exc:  # a non-finite action: never published
            self.counts["rejected_actions"] += 1
            self.get_logger().error(str(exc), throttle_duration_sec=2.0)
            return
        if plan is None:
            self.counts["waiting"] += 1
            return
        times, positions = plan
        self.cmd_pub.publish(trajectory_msg(self.runtime.joint_names, times, positions,
                                            stamp=self.get_clock().now().to_msg()))
        self.counts["chunks"] += 1
        self.compute.append(self.runtime.latency[-1])

    def _on_engage(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.retargeter.set_engaged(request.data)
        response.success = self.retargeter.config.engage == "service"
        response.message = ("engaged" if request.data else "disengaged") if response.success else \
            f"engage mode is {self.retargeter.config.engage!r}; set engage: service to use /lam/engage"
        return response

    def _on_keypoints(self, msg: PointCloud2) -> None:
        start = time.monotonic()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        age = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
        try:
            kp = cloud_to_keypoints(msg, start - age)
        except CloudError as exc:
            self.counts["rejected"] += 1
            self.get_logger().warning(f"keypoints rejected: {exc}", throttle_duration_sec=2.0)
            return
        if not (np.all(np.isfinite(kp.points)) and np.all(np.isfinite(kp.confidence))):
            self.counts["rejected_nonfinite"] += 1
            self.get_logger().warning("keypoints with non-finite values rejected", throttle_duration_sec=2.0)
            return
        if self.runtime is not None:
            self.runtime.update_keypoints(kp)
            return
        if not np.all(np.isfinite(self._q)):
            self.counts["no_joint_state"] += 1
            return
        result = self.retargeter.update(kp, self._q.copy(), kp.stamp)
        if result is None:
            self.counts["held"] += 1
            return
        self.cmd_pub.publish(trajectory_msg(self.names, [self.horizon], [result.q], stamp=msg.header.stamp))
        done = time.monotonic()
        self.counts["commands"] += 1
        self.counts["unreachable"] += not result.reachable
        self.compute.append(done - start)
        self.latency.append(age + done - start)
        self.ik_error.append(result.position_error)

    def publish_diagnostics(self) -> None:
        lat, comp, err = (np.asarray(d) for d in (self.latency, self.compute, self.ik_error))
        pct = lambda a, q, k=1e3: f"{np.percentile(a, q) * k:.2f}" if a.size else "nan"  # noqa: E731
        counts = {k: v for k, v in self.counts.items()}
        if self.runtime is not None:
            waiting = self.runtime.ready(time.monotonic())
            values = {"mode": self.mode, "inference_p50_ms": pct(comp, 50), "inference_p99_ms": pct(comp, 99),
                      "device": str(self.runtime.policy.device), "waiting_for": waiting, **counts}
            active, name = not waiting, "lam policy: lam"
        else:
            values = {"mode": self.mode, "engaged_and_tracking": self.retargeter.active,
                      "scale": f"{self.retargeter.scale or float('nan'):.3f}",
                      "capture_to_command_p50_ms": pct(lat, 50), "capture_to_command_p95_ms": pct(lat, 95),
                      "retarget_p50_ms": pct(comp, 50), "retarget_p95_ms": pct(comp, 95),
                      "ik_error_p95_mm": pct(err, 95), **counts}
            active, name = self.retargeter.active, "lam policy: retarget"
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diagnostic_status(name, DiagnosticStatus.OK if active else DiagnosticStatus.WARN,
                                        "commanding" if active else "holding", values)]
        self.diag_pub.publish(msg)


def main(args=None) -> None:
    """Console script: ``policy_node --ros-args --params-file config/policy.yaml``."""
    rclpy.init(args=args)
    node = None
    try:
        node = PolicyNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:
        rclpy.logging.get_logger("policy_node").fatal(str(exc))
        raise SystemExit(1) from None
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
