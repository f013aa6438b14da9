"""Training frames for motion imitation: what policy_node would observe, and the teacher's targets.

For each clip, playback speed and perturbation draw, the clip is looped ``loops`` times and run
through what the capture node does to it (``Perturber`` -> ``KeypointCleaner`` with the capture
node's settings: smoothing on when a perturbation is active), then sampled the way the ``lam``
runtime samples it: on a ``fps`` timer, the newest published frame. Per policy tick t:

- ``observation.keypoints`` (300,): that frame's 75 landmarks x (x, y, z, confidence), the
  runtime's layout;
- ``observation.state`` (n_cmd,): the joint state the arm would report while following the
  teacher: the teacher's plan streamed as the runtime streams a policy's chunks to the sim arm
  behind control.yaml's safety filter (``replay_states``; it lags the plan by ~0.1 s), plus a
  slow per-episode drift and white noise (so the policy must read the operator, not only
  continue its own state);
- ``action`` (n_cmd,): the teacher's joint targets (``lam_policy.motion_teacher``) at
  t + ``action_lead`` (the runtime schedules a chunk's first point one tick ahead, and the arm
  follows through the safety filter).

One episode per (clip, speed, perturbation); the first draw of each (clip, speed) is unperturbed.
Pure (numpy and the PyBullet sim arm; no rclpy, no torch).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from lam_capture.filters import CleanerConfig, KeypointCleaner
from lam_capture.mocap import MocapSource, available_clips
from lam_capture.perturb import PerturbConfig, Perturber
from lam_capture.skeleton import Keypoints
from lam_capture.sources import SourceOptions
from lam_control.robot import RobotConfig
from lam_control.safety import SafetyConfig
from lam_control.sim_arm import SimArm
from lam_control.trajectory import Trajectory
from lam_policy.frames import ACTION, EPISODE, KEYPOINTS, STATE, Frames, flatten_keypoints
from lam_policy.motion_teacher import TeacherConfig, teacher_trajectory
from lam_policy.retarget import RetargetConfig

log = logging.getLogger(__name__)


@dataclass
class MimicDataConfig:
    """What to generate. Units: m (noise), probability (dropout), 1/s (occlusion), s, Hz."""

    clips: list[str] = field(default_factory=available_clips)
    speeds: list[float] = field(default_factory=lambda: [0.75, 1.0])  # playback speeds (lam mimic --speed)
    variants: int = 10  # perturbation draws per (clip, speed); the first is unperturbed
    loops: int = 3  # clip repetitions per episode (lam mimic --repeat)
    noise: tuple[float, float] = (0.0, 0.035)  # m, range of the keypoint noise std drawn per episode
    dropout: tuple[float, float] = (0.0, 0.15)  # range of the per-landmark dropout probability
    occlusion: tuple[float, float] = (0.0, 1.5)  # 1/s, range of the occlusion burst rate
    occlusion_duration: float = 0.3  # s, as capture_node's default
    fps: float = 30.0  # Hz, the policy's rate
    chunk: int = 10  # points per streamed plan in the state replay (the policy's chunk)
    control_rate: float = 100.0  # Hz, control_node's
    max_cartesian_speed: float = 1.0  # m/s, control.yaml's sim_max_cartesian_speed
    state_noise: float = 0.005  # rad, white noise on the arm joints' state
    state_drift: float = 0.02  # rad, std of a slow (0.5 s) random offset on the arm joints' state
    action_lead: float = 0.05  # s the action is ahead of the observation
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is None:
                raise ValueError(f"MimicDataConfig.{name} must not be None")
        if not self.clips or not all(isinstance(c, str) and c for c in self.clips):
            raise ValueError(f"MimicDataConfig.clips must name at least one clip, got {self.clips!r}")
        self.speeds = [float(s) for s in self.speeds]
        if not self.speeds or not all(math.isfinite(s) and s > 0 for s in self.speeds):
            raise ValueError(f"MimicDataConfig.speeds must be finite and > 0, got {self.speeds!r}")
        for name in ("variants", "loops", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MimicDataConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("noise", "dropout", "occlusion"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
                raise ValueError(f"MimicDataConfig.{name} must be a range 0 <= low <= high, "
                                 f"got {getattr(self, name)!r}")
            setattr(self, name, (lo, hi))
        if self.dropout[1] > 1:
            raise ValueError(f"MimicDataConfig.dropout is a probability range, got {self.dropout!r}")
        for name in ("fps", "control_rate", "max_cartesian_speed"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"MimicDataConfig.{name} must be finite and > 0, got {value!r}")
        for name in ("occlusion_duration", "state_noise", "state_drift", "action_lead"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"MimicDataConfig.{name} must be finite and >= 0, got {value!r}")


def capture_cleaner(perturbed: bool) -> KeypointCleaner:
    """The cleaner capture_node builds for a mocap: source with config/capture.yaml's values:
    One Euro smoothing only when a perturbation is active (clean motion capture needs none)."""
    return KeypointCleaner(CleanerConfig(smoothing=perturbed))


def clip_frames(clip: str, speed: float) -> list[Keypoints]:
    """The clean keypoints MocapSource reads for ``clip`` at ``speed`` (resampled at the clip's
    rate, see ``mocap.retimed``), stamped with their time in the retimed clip."""
    return MocapSource(clip, SourceOptions(speed=speed)).all_keypoints()


def looped(clean: list[Keypoints], loops: int) -> list[Keypoints]:
    """The clip frames ``clean`` played ``loops`` times, as MocapSource loops them: frame i of
    the stream is frame i % F, stamped i / (frame rate) s."""
    rate = (len(clean) - 1) / (clean[-1].stamp - clean[0].stamp) if len(clean) > 1 else 30.0
    return [Keypoints(clean[i % len(clean)].points, clean[i % len(clean)].confidence, i / rate)
            for i in range(loops * len(clean))]


def captured(stream: list[Keypoints], perturb: PerturbConfig) -> list[Keypoints]:
    """The frames the capture node would publish for ``stream`` (perturbed, then cleaned)."""
    perturber = Perturber(perturb) if perturb.active else None
    cleaner = capture_cleaner(perturb.active)
    out = []
    for kp in stream:
        clean = cleaner.update(perturber.apply(kp) if perturber else kp)
        if clean is not None:
            out.append(clean)
    return out


def draw_perturbation(rng: np.random.Generator, config: MimicDataConfig, variant: int, seed: int) -> PerturbConfig:
    """Variant 0: none; others: noise, dropout and occlusion rate drawn uniformly in their ranges."""
    if variant == 0:
        return PerturbConfig(seed=seed)
    return PerturbConfig(noise=float(rng.uniform(*config.noise)), dropout=float(rng.uniform(*config.dropout)),
                         occlusion_rate=float(rng.uniform(*config.occlusion)),
                         occlusion_duration=config.occlusion_duration, seed=seed)


def state_offsets(rng: np.random.Generator, n: int, joints: int, fps: float, config: MimicDataConfig) -> np.ndarray:
    """(n, joints) rad: a slow AR(1) drift (0.5 s time constant, std ``state_drift``) plus white noise."""
    a = math.exp(-1.0 / (0.5 * fps))
    drift = np.empty((n, joints))
    drift[0] = rng.normal(0.0, config.state_drift, joints)
    kick = config.state_drift * math.sqrt(1 - a * a)
    for i in range(1, n):
        drift[i] = a * drift[i - 1] + rng.normal(0.0, kick, joints)
    return drift + rng.normal(0.0, config.state_noise, (n, joints))


def sample(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(len(at), J): each column of ``values`` (F, J) at times ``at``, held at the ends."""
    return np.stack([np.interp(at, times, values[:, j]) for j in range(values.shape[1])], axis=1)


def replay_states(robot: RobotConfig, teacher: tuple[np.ndarray, np.ndarray],
                  config: MimicDataConfig) -> tuple[np.ndarray, np.ndarray]:
    """The sim arm's measured joint states (T,) s, (T, n_cmd) while it follows the teacher the way
    it would follow a perfect policy: every 1/fps s a ``chunk``-point plan of the teacher from
    ``action_lead`` ahead, spaced 1/fps (``LamRuntime``'s plan), through control.yaml's sim
    safety filter at ``control_rate``, starting on the teacher's first pose."""
    t_teach, q_teach = teacher
    arm = SimArm(robot, SafetyConfig(max_cartesian_speed=config.max_cartesian_speed,
                                     control_period=1.0 / config.control_rate))
    try:
        arm.reset_positions(q_teach[0])
        steps = int(np.ceil(t_teach[-1] * config.control_rate)) + 1
        period, next_plan = 1.0 / config.fps, 0.0
        offsets = np.arange(config.chunk) * period
        times, states = np.arange(steps) / config.control_rate, []
        for now in times:
            if now >= next_plan - 1e-9:
                plan = sample(t_teach, q_teach, now + config.action_lead + offsets)
                arm.submit(Trajectory.build(robot.command_joints, offsets + period, plan), now)
                next_plan += period
            arm.tick(now)
            states.append(arm.read_state().positions)
    finally:
        arm.close()
    return times, np.array(states)


def episode_arrays(published: list[Keypoints], teacher: tuple[np.ndarray, np.ndarray],
                   states: tuple[np.ndarray, np.ndarray], robot: RobotConfig, config: MimicDataConfig,
                   rng: np.random.Generator) -> dict[str, np.ndarray] | None:
    """One episode's observation and action arrays at ``config.fps``, or None if nothing was published.

    Ticks run from the first published frame (the runtime waits for keypoints) to the end of the
    teacher trajectory, at a random phase; each tick observes the newest frame published by then."""
    if not published:
        return None
    t_teach, q_teach = teacher
    stamps = np.array([kp.stamp for kp in published])
    ticks = np.arange(stamps[0] + rng.uniform(0.0, 1.0 / config.fps), t_teach[-1], 1.0 / config.fps)
    if not len(ticks):
        return None
    newest = np.searchsorted(stamps, ticks, side="right") - 1  # (N,) never -1: ticks start after stamps[0]
    keypoints = np.stack([flatten_keypoints(published[i]) for i in newest])  # (N, 300)
    return labelled(ticks, sample(*states, ticks), keypoints, teacher, robot, config, rng)


def labelled(ticks: np.ndarray, state: np.ndarray, keypoints: np.ndarray, teacher: tuple[np.ndarray, np.ndarray],
             robot: RobotConfig, config: MimicDataConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One episode's arrays: the observed state (N, n_cmd) with ``state_offsets`` added to its arm
    joints, the keypoints (N, 300), and the teacher's targets at each tick + ``action_lead``."""
    state = np.array(state, dtype=float)
    n_arm = len(robot.joint_names)
    state[:, :n_arm] += state_offsets(rng, len(ticks), n_arm, config.fps, config)
    action = sample(*teacher, ticks + config.action_lead)
    return {STATE: state.astype(np.float32), KEYPOINTS: np.asarray(keypoints, dtype=np.float32),
            ACTION: action.astype(np.float32)}


def episode_entry(clip: str, speed: float, perturb: PerturbConfig, frames: int, **extra) -> dict:
    """One episode's line in a frames report."""
    return {"clip": clip, "speed": speed, "noise_m": round(perturb.noise, 4), "dropout": round(perturb.dropout, 3),
            "occlusion_per_s": round(perturb.occlusion_rate, 3), "frames": frames, **extra}


def assemble(parts: list[dict[str, np.ndarray]], episodes: list[dict], robot: RobotConfig,
             config: MimicDataConfig) -> tuple[Frames, dict]:
    """Episodes' arrays (each with its EPISODE column) -> Frames and the report."""
    if not parts:
        raise ValueError(f"no episode produced any frames for clips {config.clips}")
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    report = {"episodes": len(episodes), "frames": int(len(data[ACTION])), "fps": config.fps,
              "clips": list(config.clips), "speeds": config.speeds, "per_episode": episodes}
    return Frames(data, robot.command_joints, config.fps), report


def build_mimic_frames(config: MimicDataConfig | None = None, robot: RobotConfig | None = None,
                       retarget: RetargetConfig | None = None,
                       teacher: TeacherConfig | None = None) -> tuple[Frames, dict]:
    """Frames for ``lam train`` (see the module docstring) and a report of what went in."""
    config = config or MimicDataConfig()
    robot = robot or RobotConfig()
    retarget, teacher = retarget or RetargetConfig(), teacher or TeacherConfig()
    rng = np.random.default_rng(config.seed)
    parts, episodes = [], []
    for clip in config.clips:
        for speed in config.speeds:
            stream = looped(clip_frames(clip, speed), config.loops)
            teach = teacher_trajectory(robot, stream, retarget, teacher)
            states = replay_states(robot, teach, config)
            for variant in range(config.variants):
                perturb = draw_perturbation(rng, config, variant, int(rng.integers(2**31)))
                arrays = episode_arrays(captured(stream, perturb), teach, states, robot, config, rng)
                if arrays is None:
                    log.warning("%s at speed %g, variant %d: the cleaner published nothing; skipped",
                                clip, speed, variant)
                    continue
                arrays[EPISODE] = np.full(len(arrays[ACTION]), len(episodes), dtype=np.int64)
                parts.append(arrays)
                episodes.append(episode_entry(clip, speed, perturb, len(arrays[ACTION])))
        log.info("mimic data: %s done (%d episodes so far)", clip, len(episodes))
    return assemble(parts, episodes, robot, config)
