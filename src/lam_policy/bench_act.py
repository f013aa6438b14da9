"""`lam bench` LAM section: select_action latency and training throughput of ACT and the MLP.

Also the seeded synthetic reach task used to exercise policies and training before real
demonstrations exist: the arm's joints move toward a per-episode goal that is visible only as
an object pose, and the gripper closes on arrival.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from lam_policy.act import ACTConfig, ACTPolicy
from lam_policy.frames import ACTION, EPISODE, KEYPOINTS, OBJECT_POSES, STATE, Frames, compute_stats
from lam_policy.mlp import MLPConfig, MLPPolicy

REACH_JOINTS = ["joint1", "joint2", "joint3", "joint4", "gripper"]
GRIPPER_OPEN = 0.04  # m finger opening


def _reach_episode(rng: np.random.Generator, length: int, keypoints: bool) -> dict[str, np.ndarray]:
    goal = rng.uniform(-1.0, 1.0, 4)  # rad
    q = rng.uniform(-0.3, 0.3, 4)
    grip = GRIPPER_OPEN
    xyz = 0.4 * np.tanh(goal[:3]) + np.array([0.3, 0.0, 0.2])  # m: where the target object sits
    quat = np.array([0.0, 0.0, np.sin(goal[3] / 2), np.cos(goal[3] / 2)])  # xyzw: yaw encodes joint 4
    states, actions = [], []
    for _ in range(length):
        states.append(np.r_[q, grip])
        q = q + np.clip(0.15 * (goal - q), -0.05, 0.05)  # rad per frame
        grip = 0.0 if np.max(np.abs(goal - q)) < 0.1 else grip
        actions.append(np.r_[q, grip])
    out = {STATE: np.array(states), ACTION: np.array(actions), OBJECT_POSES: np.tile(np.r_[xyz, quat], (length, 1))}
    if keypoints:
        kp = rng.normal(0.0, 0.3, (length, 75, 4))
        kp[..., 3] = 1.0
        out[KEYPOINTS] = kp.reshape(length, 300)
    return out


def synthetic_reach_frames(n_episodes: int = 4, seed: int = 0, length: tuple[int, int] = (40, 60),
                           fps: float = 30.0, keypoints: bool = False) -> Frames:
    """Seeded reach demonstrations: state (N, 5), object_poses (N, 7), action = next state (N, 5)."""
    rng = np.random.default_rng(seed)
    episodes = [_reach_episode(rng, int(rng.integers(length[0], length[1] + 1)), keypoints) for _ in range(n_episodes)]
    data = {k: np.concatenate([e[k] for e in episodes]).astype(np.float32) for k in episodes[0]}
    data[EPISODE] = np.concatenate([np.full(len(e[STATE]), i, dtype=np.int64) for i, e in enumerate(episodes)])
    return Frames(data, list(REACH_JOINTS), fps)


def _latency(policy, frames: Frames, iters: int) -> dict:
    obs = [{k: frames.data[k][i] for k in policy.config.observation_keys} for i in range(len(frames))]
    policy.reset()
    for i in range(20):  # warm-up
        policy.select_action(obs[i % len(obs)])
    samples = []
    for i in range(iters):
        t0 = time.perf_counter()
        policy.select_action(obs[i % len(obs)])
        samples.append(time.perf_counter() - t0)
    ms = np.asarray(samples) * 1e3
    return {"select_action_p50_ms": round(float(np.percentile(ms, 50)), 3),
            "select_action_p99_ms": round(float(np.percentile(ms, 99)), 3)}


def bench_policy(device: str = "auto", iters: int = 500, train_steps: int = 30, batch_size: int = 64,
                 threads: int | None = None) -> dict:
    """select_action p50/p99 (ms, temporal ensembling on) and training samples/s for the default
    ACT and MLP configs (observations: state + object poses) on ``device``. ``threads`` sets
    torch's intra-op threads for the measurement (None: leave as is); a policy process on a CPU
    shared with other work has the steadiest latency with 1."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(device, iters, train_steps, batch_size)
    finally:
        torch.set_num_threads(before)


def _bench(device: str, iters: int, train_steps: int, batch_size: int) -> dict:
    from lam_policy.train import TrainConfig, train

    frames = synthetic_reach_frames(n_episodes=8, seed=0)
    keys = (STATE, OBJECT_POSES)
    stats = compute_stats(frames, (*keys, ACTION))
    results: dict = {"device": str(torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                                else ("cpu" if device == "auto" else device))),
                     "torch_threads": torch.get_num_threads()}
    for name, cls, config in (("act", ACTPolicy, ACTConfig(observation_keys=keys, device=device)),
                              ("mlp", MLPPolicy, MLPConfig(observation_keys=keys, device=device))):
        policy = cls(config, frames.feature_dims((*keys, ACTION)), frames.joint_names, frames.fps, stats).eval()
        entry = _latency(policy, frames, iters)
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(frames, tmp, TrainConfig(policy=name, policy_config=config, steps=train_steps,
                                                     batch_size=batch_size, device=device, val_every=0,
                                                     checkpoint_every=0), resume=False, progress=False)
        entry["train_samples_per_s"] = round(summary["samples_per_s"], 1)
        entry["parameters"] = sum(p.numel() for p in policy.parameters())
        results[name] = entry
    return results
