"""`lam bench --learning`: time to 90% success on `reach`, from recording to a trained policy.

Records 50 scripted demonstrations through the whole teleop graph (`lam record`), then trains the
small ACT in slices of ``eval_every`` steps, evaluating 20 unseen seeds after each slice, and
reports the training wall time at which success first reached 90%.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lam_control.robot import RobotConfig
from lam_policy.act import ACTConfig
from lam_policy.evaluate import EvalConfig, evaluate
from lam_policy.frames import OBJECT_POSES, STATE, TCP
from lam_policy.learn_cli import default_absolute_action_joints, frames_from_folders
from lam_policy.policy_base import load_policy
from lam_policy.train import TrainConfig, train

# What the learning test and this bench train: `lam train`'s defaults (ACT d_model 64, relative
# actions with the gripper's absolute, chunk 20; batch 32, lr 3e-4) on the task observations, on the CPU.
TASK_KEYS = (STATE, OBJECT_POSES, TCP)


def small_train_config(steps: int, seed: int = 0, policy: str = "act") -> TrainConfig:
    from lam_policy.mlp import MLPConfig

    absolute = tuple(default_absolute_action_joints(RobotConfig().command_joints))  # as lam train
    pc = (ACTConfig if policy == "act" else MLPConfig)(observation_keys=TASK_KEYS, device="cpu",
                                                       absolute_action_joints=absolute)
    return TrainConfig(policy=policy, policy_config=pc, steps=steps, val_every=0, checkpoint_every=0, seed=seed,
                       device="cpu")


def record_demos(out: Path, task: str = "reach", episodes: int = 50, seed: int = 0) -> dict:
    proc = subprocess.run([sys.executable, "-m", "lam_control.cli", "record", "--source", f"scripted:{task}",
                           "--task", task, "--episodes", str(episodes), "--seed", str(seed), "--out", str(out),
                           "--json"], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or "{" not in proc.stdout:
        raise RuntimeError(f"lam record failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def bench_time_to_success(steps: int = 6000, eval_every: int = 1000, target: float = 0.9) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        demos = record_demos(Path(tmp) / "demos")
        record_s = time.monotonic() - t0
        frames, _ = frames_from_folders([str(Path(tmp) / "demos")], 30.0)
        config, run = small_train_config(steps), Path(tmp) / "run"
        train_s, curve = 0.0, []
        for until in range(eval_every, steps + 1, eval_every):
            t1 = time.monotonic()
            train(frames, run, config, progress=False, until=until)
            train_s += time.monotonic() - t1
            policy = load_policy(run / "checkpoints" / f"step_{until:06d}", RobotConfig().command_joints, "cpu")
            rate = evaluate(policy, "reach", EvalConfig(episodes=20, seed=1000))["success_rate"]
            curve.append({"step": until, "train_s": round(train_s, 1), "success_rate": rate})
            if rate >= target:
                break
    reached = next((c for c in curve if c["success_rate"] >= target), None)
    return {"demos": demos["episodes"], "demo_success_rate": demos["success_rate"],
            "record_s": round(record_s, 1), "target": target,
            "time_to_target_train_s": reached and reached["train_s"], "steps_to_target": reached and reached["step"],
            "curve": curve}
