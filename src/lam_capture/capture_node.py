"""capture_node: any source of the operator in, clean body-frame keypoints out."""
from __future__ import annotations

import json
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import JointState, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from lam_capture.estimator import EstimatorConfig, PoseEstimator
from lam_capture.filters import CleanerConfig, KeypointCleaner, OneEuroConfig
from lam_capture.perturb import PerturbConfig, Perturber
from lam_capture.pipeline import CapturePipeline
from lam_capture.ros_keypoints import keypoints_to_cloud, skeleton_markers
from lam_capture.sources import KEYPOINT_KINDS, SourceOptions, open_source
from lam_control.robot import PRESETS
from lam_control.ros_convert import diagnostic_status, poses_from_msg
from lam_control.ros_params import declare_parameters
from lam_control.ros_qos import KEYPOINTS_QOS, LATCHED_QOS, SENSOR_QOS, STATE_QOS

PARAMETERS = {  # name: (default, description); see config/capture.yaml
    "source": ("camera:0", "camera:N | video:PATH | image:PATH | mocap:CLIP | scripted:TASK"),
    "mirrored": (False, "the camera image is mirrored (selfie view)"),
    "rate": (30.0, "Hz, frame rate of image: sources"),
    "realtime": (True, "video: at its own frame rate (false: as fast as processed)"),
    "loop": (False, "video:/mocap: start over at the end"),
    "speed": (1.0, "mocap: playback speed (0.5 = half speed)"),
    "hands": (True, "run MediaPipe Hands as well as Pose"),
    "model_complexity": (1, "MediaPipe model: 0 lite, 1 full"),
    "min_confidence": (0.5, "landmarks below this visibility/presence get confidence 0"),
    "one_euro_min_cutoff": (OneEuroConfig().min_cutoff, "Hz, One Euro minimum cutoff"),
    "one_euro_beta": (OneEuroConfig().beta, "One Euro speed coefficient"),
    "one_euro_d_cutoff": (OneEuroConfig().d_cutoff, "Hz, One Euro derivative cutoff"),
    "max_speed": (CleanerConfig().max_speed, "m/s, faster landmark jumps are rejected as implausible"),
    "stable_frames": (CleanerConfig().stable_frames, "consistent frames needed to resume after a jump"),
    "perturb_noise": (0.0, "m, Gaussian noise added to every coordinate (robustness tests)"),
    "perturb_dropout": (0.0, "probability per landmark per frame of dropping it"),
    "perturb_occlusion_rate": (0.0, "1/s, rate of occlusion bursts hiding both arms"),
    "perturb_occlusion_duration": (0.3, "s, length of an occlusion burst"),
    "perturb_seed": (0, "seed of the perturbations"),
    "publish_skeleton": (True, "publish /lam/skeleton markers"),
    "scripted_seed": (0, "scripted: the operator's seed (combined with each episode's seed)"),
    "scripted_noise": (0.01, "scripted: m, Gaussian keypoint noise std per coordinate"),
    "scripted_dropout": (0.003, "scripted: probability per landmark per frame of a dropout"),
    "scripted_reaction_delay": (0.2, "scripted: s between seeing the scene and acting on it"),
    "scripted_speed_range": ([0.15, 0.3], "scripted: m/s TCP speed range, drawn per episode"),
    "scripted_robot": ("lam_arm", "scripted: robot preset whose TCP the operator watches (lam_arm | panda)"),
    "diagnostics_rate": (1.0, "Hz, /diagnostics"),
}


class CaptureNode(Node):
    """Publishes the operator's keypoints.

    Publishes: /lam/keypoints (sensor_msgs/PointCloud2: x, y, z, confidence per landmark in the
    skeleton's order; stamp = frame capture time; frame_id names the skeleton; KEYPOINTS_QOS),
    /lam/skeleton (visualization_msgs/MarkerArray), /diagnostics (frame rate, processing latency,
    source health). The capture loop runs on its own thread, so a slow model never blocks other
    nodes sharing the executor. Parameters: PARAMETERS and config/capture.yaml.

    A ``scripted:TASK`` source watches the scene: it subscribes /lam/object_poses
    (geometry_msgs/PoseArray) and /joint_states (sensor_msgs/JointState), both SENSOR_QOS, and
    feeds them to the operator as they arrive; /lam/task/episode (std_msgs/String JSON {"task",
    "seed"}, LATCHED_QOS, published by control_node at start-up and on every /lam/task/reset)
    starts the operator's plan for that episode.
    """

    def __init__(self, **kwargs):
        super().__init__("capture_node", **kwargs)
        self.pipeline = None
        self._thread = None
        try:
            self._setup()
        except Exception:
            self.destroy_node()
            raise

    def _setup(self) -> None:
        get = declare_parameters(self, PARAMETERS)
        options = SourceOptions(rate=float(get("rate")), realtime=bool(get("realtime")), loop=bool(get("loop")),
                                speed=float(get("speed")))
        spec = str(get("source"))
        perturb = PerturbConfig(noise=float(get("perturb_noise")), dropout=float(get("perturb_dropout")),
                                occlusion_rate=float(get("perturb_occlusion_rate")),
                                occlusion_duration=float(get("perturb_occlusion_duration")),
                                seed=int(get("perturb_seed")))
        cleaner = KeypointCleaner(CleanerConfig(
            min_confidence=float(get("min_confidence")), max_speed=float(get("max_speed")),
            stable_frames=int(get("stable_frames")),
            # Clean motion capture needs no smoothing (it would only lag); perturbed data does.
            smoothing=perturb.active or not spec.startswith("mocap:"),
            one_euro=OneEuroConfig(min_cutoff=float(get("one_euro_min_cutoff")), beta=float(get("one_euro_beta")),
                                   d_cutoff=float(get("one_euro_d_cutoff")))))
        if spec.startswith("scripted:"):
            options.extra["operator"] = self._operator_config(get)
        source = open_source(spec, options)
        estimator = None
        if spec.split(":", 1)[0] not in KEYPOINT_KINDS:
            try:
                estimator = PoseEstimator(EstimatorConfig(model_complexity=int(get("model_complexity")),
                                                          hands=bool(get("hands")), mirrored=bool(get("mirrored"))))
            except Exception:
                source.close()
                raise
        self.pipeline = CapturePipeline(source, estimator, cleaner,
                                        Perturber(perturb) if perturb.active else None)
        self.keypoints_pub = self.create_publisher(PointCloud2, "/lam/keypoints", KEYPOINTS_QOS)
        self.skeleton_pub = self.create_publisher(MarkerArray, "/lam/skeleton", STATE_QOS) \
            if get("publish_skeleton") else None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", STATE_QOS)
        self.create_timer(1.0 / float(get("diagnostics_rate")), self.publish_diagnostics)
        self.errors = 0
        self._last_error = ""
        self._running = threading.Event()
        self._running.set()
        if spec.startswith("scripted:"):
            self._poses = None
            self.create_subscription(PoseArray, "/lam/object_poses", self._on_object_poses, SENSOR_QOS)
            self.create_subscription(JointState, "/joint_states", self._on_joint_states, SENSOR_QOS)
            self.create_subscription(String, "/lam/task/episode", self._on_episode, LATCHED_QOS)
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()
        self.get_logger().info(f"capture_node up: source={source.spec}")

    @staticmethod
    def _operator_config(get):
        from lam_capture.scripted import OperatorConfig

        preset = get("scripted_robot")
        if preset not in PRESETS:
            raise ValueError(f"parameter scripted_robot must be one of {sorted(PRESETS)}, got {preset!r}")
        return OperatorConfig(seed=int(get("scripted_seed")), noise=float(get("scripted_noise")),
                              dropout=float(get("scripted_dropout")),
                              reaction_delay=float(get("scripted_reaction_delay")),
                              speed_range=[float(v) for v in get("scripted_speed_range")],
                              robot=PRESETS[preset]())

    # -- the scripted operator's view of the scene ----------------------------------------
    def _monotonic(self, stamp) -> float:
        """A message stamp (ROS time) on the monotonic clock the source stamps frames with."""
        age = (self.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)) * 1e-9
        return time.monotonic() - max(age, 0.0)

    def _on_object_poses(self, msg: PoseArray) -> None:
        self._poses = poses_from_msg(msg)

    def _on_joint_states(self, msg: JointState) -> None:
        if self._poses is None or self.pipeline is None:
            return
        try:
            self.pipeline.source.observe(self._poses, list(msg.name), list(msg.position),
                                         self._monotonic(msg.header.stamp))
        except ValueError as exc:  # another task's objects: say so, keep capturing
            self.get_logger().error(f"scripted operator cannot use the scene: {exc}", throttle_duration_sec=5.0)

    def _on_episode(self, msg: String) -> None:
        try:
            episode = json.loads(msg.data)
            seed = int(episode["seed"])
        except (ValueError, KeyError, TypeError):
            self.get_logger().error(f"bad /lam/task/episode message {msg.data!r}")
            return
        self._poses = None  # the old episode's scene must not steer the new plan
        self.pipeline.source.reset(seed)
        self.get_logger().info(f"scripted operator: new episode {episode}")

    def _loop(self) -> None:
        while self._running.is_set():
            try:
                result = self.pipeline.step(timeout=0.25)
            except Exception as exc:  # noqa: BLE001 - a bad frame must never kill capture
                self.errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(f"capture step failed: {self._last_error}", throttle_duration_sec=2.0)
                time.sleep(0.05)
                continue
            if result.keypoints is not None:
                self._publish(result.keypoints)
            if self.pipeline.source.finished:
                self.get_logger().info(f"source {self.pipeline.source.spec} finished")
                return

    def _publish(self, kp) -> None:
        age = time.monotonic() - kp.stamp  # capture stamp (monotonic) -> ROS time
        stamp = (self.get_clock().now() - Duration(nanoseconds=int(age * 1e9))).to_msg()
        self.keypoints_pub.publish(keypoints_to_cloud(kp, stamp))
        if self.skeleton_pub is not None:
            self.skeleton_pub.publish(skeleton_markers(kp, stamp))

    def publish_diagnostics(self) -> None:
        pipe = self.pipeline
        source = pipe.source
        p50, p95 = pipe.latency_percentiles()
        healthy = source.healthy
        values = {"source": source.spec, "healthy": healthy,
                  "health_reason": getattr(source, "health_reason", ""),
                  "finished": source.finished, "frames": pipe.frames,
                  "published_rate_hz": f"{pipe.rate():.2f}", "latency_p50_ms": f"{p50 * 1e3:.1f}",
                  "latency_p95_ms": f"{p95 * 1e3:.1f}", "no_person_frames": pipe.no_person,
                  "tracking_state": getattr(pipe.cleaner, "state", ""),
                  "rejected_frames": getattr(pipe.cleaner, "rejected_frames", 0),
                  "errors": self.errors, "last_error": self._last_error}
        level = DiagnosticStatus.OK if healthy and not self.errors else DiagnosticStatus.WARN
        message = "capturing" if healthy else f"source unhealthy: {values['health_reason']}"
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diagnostic_status("lam capture: source", level, message, values, source.spec)]
        self.diag_pub.publish(msg)

    def stop(self) -> None:
        """Stop capturing (the node stays up and keeps reporting diagnostics)."""
        if self._thread is not None:
            self._running.clear()
            self._thread.join(timeout=3.0)

    def destroy_node(self) -> None:
        self.stop()
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        super().destroy_node()


def main(args=None) -> None:
    """Console script: ``capture_node --ros-args -p source:=camera:0``."""
    rclpy.init(args=args)
    node = None
    try:
        node = CaptureNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:  # bad source or parameters: one clear line
        rclpy.logging.get_logger("capture_node").fatal(str(exc))
        raise SystemExit(1) from None
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
