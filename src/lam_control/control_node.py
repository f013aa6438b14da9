"""control_node: the one node allowed to move the arm.

Every command passes the safety filter (lam_control.safety) before it reaches the PyBullet arm
or a physical arm's ros2_control joint_trajectory_controller.
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
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lam_control.arm import ArmNotReady
from lam_control.robot import RobotConfig
from lam_control.ros_params import declare_parameters
from lam_control.ros_qos import COMMAND_QOS, ESTOP_QOS, LATCHED_QOS, STATE_QOS
from lam_control.ros_convert import diagnostic_status, joint_state_msg, pose_array_msg, trajectory_from_msg
from lam_control.safety import SafetyConfig
from lam_control.sim_arm import SimArm, SimConfig
from lam_control.tasks import TASKS, make_task
from lam_control.trajectory import TrajectoryError


LEVEL = {"": DiagnosticStatus.OK, "idle": DiagnosticStatus.OK, "watchdog": DiagnosticStatus.WARN,
         "fault": DiagnosticStatus.ERROR, "estop": DiagnosticStatus.ERROR}

PARAMETERS = {  # name: (default, description); units and examples in config/control.yaml
    "backend": ("sim", "sim (PyBullet) or ros2_control (a physical arm's joint_trajectory_controller)"),
    "urdf": ("", "URDF: '' for the package's lam_arm.urdf, 'pybullet_data:REL', or a file path"),
    "joint_names": (RobotConfig().joint_names, "arm joints, in command order"),
    "gripper_joints": (RobotConfig().gripper_joints, "finger joints, after the arm joints"),
    "ee_link": (RobotConfig().ee_link, "TCP link for the workspace box and the Cartesian cap"),
    "home": (RobotConfig().home, "rad, sim start pose over joint_names"),
    "gripper_home": (RobotConfig().gripper_home, "m, sim start opening of each finger"),
    "control_rate": (100.0, "Hz, safety filter and command output"),
    "state_rate": (100.0, "Hz, /joint_states (sim backend; a divisor of control_rate)"),
    "diagnostics_rate": (2.0, "Hz, /diagnostics (also at once on a change of fault state)"),
    "command_timeout": (SafetyConfig().command_timeout, "s without a valid command before holding; 0 = off"),
    "position_margin": (SafetyConfig().position_margin, "rad kept clear of revolute limits"),
    "prismatic_margin": (SafetyConfig().prismatic_margin, "m kept clear of prismatic limits"),
    "velocity_scale": (SafetyConfig().velocity_scale, "velocity cap, fraction of the URDF limit"),
    "accel_time": (SafetyConfig().accel_time, "s from rest to the velocity cap"),
    "max_cartesian_speed": (SafetyConfig().max_cartesian_speed, "m/s link and TCP cap, ros2_control backend"),
    "sim_max_cartesian_speed": (1.0, "m/s link and TCP cap, sim backend"),
    "workspace_min": (SafetyConfig().workspace_min, "m, TCP box lower corner in the base frame"),
    "workspace_max": (SafetyConfig().workspace_max, "m, TCP box upper corner in the base frame"),
    "gui": (False, "open the PyBullet GUI (needs a display)"),
    "task": ("", "sim task: '' (none) | " + " | ".join(TASKS)),
    "task_seed": (0, "seed of the start-up scene and of the first /lam/task/reset; reset k (from 0) uses task_seed + k"),
    "task_success_rate": (2.0, "Hz, /lam/task/success republished (also at once on a change)"),
    "controller_topic": ("/joint_trajectory_controller/joint_trajectory", "ros2_control JTC command topic"),
    "joint_states_topic": ("/joint_states", "joint state topic (published in sim, read on ros2_control)"),
    "state_timeout": (0.5, "s without joint states before a physical arm faults and holds"),
    "stream_lookahead": (0.05, "s, time_from_start of each setpoint streamed to the JTC"),
}


class ControlNode(Node):
    """Runs the arm behind the safety filter.

    Subscribes: /lam/joint_command (trajectory_msgs/JointTrajectory, joints matched by name,
    COMMAND_QOS), /lam/estop (std_msgs/Bool, True latches a stop, ESTOP_QOS).
    Publishes: /joint_states (sensor_msgs/JointState at state_rate, sim backend only; on a real
    arm joint_state_broadcaster owns it), /lam/applied_command (sensor_msgs/JointState: the
    command actually sent after the filter, each control tick), /diagnostics
    (diagnostic_msgs/DiagnosticArray: fault, e-stop, watchdog, loop timing).
    Services: /lam/reset (std_srvs/Trigger) clears e-stop and faults; the arm then holds until
    a new command. Parameters: see PARAMETERS and config/control.yaml.

    With a ``task`` (sim backend only) it also publishes /lam/object_poses (geometry_msgs/PoseArray
    in the task's object order, frame_id = the robot's base link, at state_rate, STATE_QOS),
    /lam/task/success (std_msgs/Bool, LATCHED_QOS, on change and at task_success_rate) and
    /lam/task/episode (std_msgs/String JSON {"task", "seed"}, LATCHED_QOS, once per episode: the
    scripted operator starts a new plan on it), and serves /lam/task/reset (std_srvs/Trigger):
    the next seed's scene, the arm teleported home with its filter restarted there (a latched
    e-stop stays latched), answered with message JSON {"task", "seed"}. Start-up is episode 0
    (seed task_seed); reset k (counting from 0) uses task_seed + k, so the first reset re-places
    the start-up scene and `lam record --seed S` records seeds S, S+1, ...
    """

    def __init__(self, **kwargs):
        super().__init__("control_node", **kwargs)
        try:
            self._setup()
        except Exception:
            self.destroy_node()  # leave nothing half-built in the context
            raise

    def _setup(self) -> None:
        get = declare_parameters(self, PARAMETERS)
        self.backend = get("backend")
        robot = RobotConfig(urdf=get("urdf"), joint_names=list(get("joint_names")),
                            gripper_joints=list(get("gripper_joints")), ee_link=get("ee_link"),
                            home=list(get("home")), gripper_home=get("gripper_home"))
        cartesian = get("sim_max_cartesian_speed") if self.backend == "sim" else get("max_cartesian_speed")
        safety = SafetyConfig(
            position_margin=get("position_margin"), prismatic_margin=get("prismatic_margin"),
            velocity_scale=get("velocity_scale"), accel_time=get("accel_time"),
            max_cartesian_speed=cartesian, workspace_min=list(get("workspace_min")),
            workspace_max=list(get("workspace_max")), command_timeout=get("command_timeout"),
            control_period=1.0 / _positive(get("control_rate"), "control_rate"))
        self.group = MutuallyExclusiveCallbackGroup()  # the arm is single-threaded: one group
        if self.backend == "sim":
            self.arm = SimArm(robot, safety, SimConfig(gui=bool(get("gui"))))
        elif self.backend == "ros2_control":
            from lam_control.ros_control_arm import RosControlArm

            self.arm = RosControlArm(self, robot, safety, controller_topic=get("controller_topic"),
                                     joint_states_topic=get("joint_states_topic"),
                                     state_timeout=get("state_timeout"),
                                     lookahead=get("stream_lookahead"), callback_group=self.group)
        else:
            raise ValueError(f"parameter backend must be 'sim' or 'ros2_control', got {self.backend!r}")
        self.joint_names = self.arm.joint_names
        self.counts: Counter = Counter()
        self._periods: deque = deque(maxlen=500)
        self._work: deque = deque(maxlen=500)
        self._last_tick: float | None = None
        self._last_reason: str | None = None
        self._last_error = ""
        # Age of each command when first applied, from its header stamp (the policy stamps a
        # command with the capture time of the keypoints it came from): capture -> applied.
        self._pending_stamp_ns: int | None = None
        self._apply_age: deque = deque(maxlen=500)

        self.create_subscription(JointTrajectory, "/lam/joint_command", self._on_command, COMMAND_QOS,
                                 callback_group=self.group)
        self.create_subscription(Bool, "/lam/estop", self._on_estop, ESTOP_QOS, callback_group=self.group)
        self.create_service(Trigger, "/lam/reset", self._on_reset, callback_group=self.group)
        self.applied_pub = self.create_publisher(JointState, "/lam/applied_command", STATE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", STATE_QOS)
        self.create_timer(safety.control_period, self._on_control, callback_group=self.group)
        self.create_timer(1.0 / _positive(get("diagnostics_rate"), "diagnostics_rate"),
                          self.publish_diagnostics, callback_group=self.group)
        self.state_pub = None
        if self.backend == "sim":  # on a real arm joint_state_broadcaster owns /joint_states
            self.state_pub = self.create_publisher(JointState, get("joint_states_topic"), STATE_QOS)
        # /joint_states goes out from the control tick itself (one timer, not two, on a busy core).
        self._state_every = max(1, round(get("control_rate") / _positive(get("state_rate"), "state_rate")))
        self._ticks = 0
        self.task = None
        if get("task"):
            self._setup_task(get)
        self.get_logger().info(f"control_node up: backend={self.backend}, robot={robot.urdf_path().name}, "
                               f"joints={self.joint_names}")

    def _setup_task(self, get) -> None:
        if self.backend != "sim":
            raise ValueError(f"parameter task={get('task')!r} needs backend sim, got {self.backend!r}")
        self.task = make_task(get("task"), self.arm)
        self.task_seed, self.resets, self._success = int(get("task_seed")), 0, None
        self.base_frame = self.arm.model.root
        self.objects_pub = self.create_publisher(PoseArray, "/lam/object_poses", STATE_QOS)
        self.success_pub = self.create_publisher(Bool, "/lam/task/success", LATCHED_QOS)
        self.episode_pub = self.create_publisher(String, "/lam/task/episode", LATCHED_QOS)
        self.create_service(Trigger, "/lam/task/reset", self._on_task_reset, callback_group=self.group)
        self.create_timer(1.0 / _positive(get("task_success_rate"), "task_success_rate"),
                          lambda: self._publish_success(force=True), callback_group=self.group)
        self._start_episode(self.task_seed)

    def _start_episode(self, seed: int) -> dict:
        self.task.reset(seed)
        self._pending_stamp_ns = None
        episode = {"task": self.task.name, "seed": int(seed)}
        self.episode_pub.publish(String(data=json.dumps(episode)))
        self._publish_objects(self.get_clock().now().to_msg())
        self._publish_success(force=True)
        self.get_logger().info(f"task episode: {episode}")
        return episode

    def _on_task_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        episode = self._start_episode(self.task_seed + self.resets)
        self.resets += 1
        response.success, response.message = True, json.dumps(episode)
        return response

    def _publish_objects(self, stamp) -> None:
        self.objects_pub.publish(pose_array_msg(self.task.object_poses(), self.base_frame, stamp))

    def _publish_success(self, force: bool = False) -> None:
        success = bool(self.task.success())  # a numpy bool serialises as False
        if force or success != self._success:
            if success and self._success is False:
                self.get_logger().info(f"task {self.task.name} (seed {self.task.seed}) succeeded")
            self._success = success
            self.success_pub.publish(Bool(data=success))

    # -- inputs -----------------------------------------------------------------------------
    def _on_command(self, msg: JointTrajectory) -> None:
        now = time.monotonic()
        try:
            accepted = self.arm.submit(trajectory_from_msg(msg), now)
        except (TrajectoryError, ArmNotReady) as exc:
            self.counts["rejected"] += 1
            self._last_error = str(exc)
            self.get_logger().warning(f"command rejected: {exc}", throttle_duration_sec=1.0)
            return
        self.counts["accepted" if accepted else "rejected"] += 1
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if accepted and stamp_ns > 0:
            self._pending_stamp_ns = stamp_ns
        if not accepted:
            self.get_logger().error(f"command refused by the safety filter: {self._filter_state()}",
                                    throttle_duration_sec=1.0)
            self.publish_diagnostics()

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.arm.estop()
            self.get_logger().warning("E-STOP latched; call /lam/reset to clear")
            self.publish_diagnostics()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was = self._filter_state()
        self.arm.reset()
        response.success = True
        response.message = f"cleared ({was}); the arm holds until the next command"
        self.get_logger().info(f"reset: {response.message}")
        self.publish_diagnostics()
        return response

    # -- loop -------------------------------------------------------------------------------
    def _on_control(self) -> None:
        start = time.monotonic()
        if self._last_tick is not None:
            self._periods.append(start - self._last_tick)
        self._last_tick = start
        status = self.arm.tick(start)
        if status is None:
            return
        self.counts.update(status.interventions)
        now_ros = self.get_clock().now()
        if self._pending_stamp_ns is not None and not status.holding:
            self._apply_age.append((now_ros.nanoseconds - self._pending_stamp_ns) * 1e-9)
            self._pending_stamp_ns = None
        stamp = now_ros.to_msg()
        self.applied_pub.publish(joint_state_msg(self.joint_names, status.command, stamp=stamp))
        self._ticks += 1
        if self.state_pub is not None and self._ticks % self._state_every == 0:
            state = self.arm.read_state()
            self.state_pub.publish(joint_state_msg(self.joint_names, state.positions, state.velocities,
                                                   stamp=stamp))
            if self.task is not None:
                self._publish_objects(stamp)
                self._publish_success()
        self._work.append(time.monotonic() - start)
        if status.reason != self._last_reason:
            self._last_reason = status.reason
            self.publish_diagnostics()

    def _filter_state(self) -> str:
        filt = self.arm.filter
        if filt is None:
            return "waiting for joint states"
        reason = filt.hold_reason(time.monotonic())
        return {"": "tracking", "idle": "idle", "watchdog": "holding: command stream stale",
                "estop": "E-STOP latched", "fault": f"FAULT: {filt.fault}"}[reason]

    def publish_diagnostics(self) -> None:
        filt, now = self.arm.filter, time.monotonic()
        reason = filt.hold_reason(now) if filt is not None else "idle"
        age = now - filt.last_command_time if filt is not None and filt.last_command_time else float("nan")
        safety = {"fault": filt.fault if filt else "", "estop": bool(filt and filt.estopped),
                  "hold_reason": reason or "none", "watchdog_tripped": reason == "watchdog",
                  "command_timeout_s": self.arm.safety_config.command_timeout,
                  "last_command_age_s": f"{age:.3f}", "commands_accepted": self.counts["accepted"],
                  "commands_rejected": self.counts["rejected"], "last_rejection": self._last_error}
        for kind in ("position_clamp", "velocity_cap", "accel_cap", "cartesian_cap", "workspace_clamp",
                     "workspace_stop", "workspace_slide"):
            safety[f"interventions_{kind}"] = self.counts[kind]
        periods, work = np.array(self._periods), np.array(self._work)
        loop = {"control_period_target_s": self.arm.safety_config.control_period,
                "period_p50_s": _pct(periods, 50), "period_p99_s": _pct(periods, 99),
                "period_max_s": _pct(periods, 100), "tick_p50_s": _pct(work, 50),
                "tick_p99_s": _pct(work, 99),
                "overruns": int(np.sum(periods > 1.5 * self.arm.safety_config.control_period)),
                "stamp_to_apply_p50_s": _pct(np.array(self._apply_age), 50),
                "stamp_to_apply_p95_s": _pct(np.array(self._apply_age), 95)}
        level = LEVEL[reason] if filt is not None else DiagnosticStatus.WARN
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diagnostic_status("lam control: safety", level, self._filter_state(), safety,
                                        self.arm.robot.urdf_path().name),
                      diagnostic_status("lam control: loop", DiagnosticStatus.OK,
                                        f"backend {self.backend}", loop)]
        self.diag_pub.publish(msg)

    def destroy_node(self) -> None:
        arm = getattr(self, "arm", None)  # absent when construction failed on bad parameters
        if arm is not None:
            arm.close()
        super().destroy_node()


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise ValueError(f"parameter {name} must be > 0, got {value!r}")
    return float(value)


def _pct(values: np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q):.5f}" if values.size else "nan"


def main(args=None) -> None:
    """Console script: ``control_node --ros-args --params-file config/control.yaml``."""
    rclpy.init(args=args)
    node = None
    try:
        node = ControlNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:  # bad parameters: one clear line, exit 1
        rclpy.logging.get_logger("control_node").fatal(str(exc))
        raise SystemExit(1) from None
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
