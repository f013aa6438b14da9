"""Child process for the kill -9 test: records /joint_states at ~100 Hz until it is killed.

Usage: record_child.py EPISODE_DIR SIDE_FILE. After each write returns, the message's stamp is
appended to SIDE_FILE with an unbuffered os.write (page cache survives a SIGKILL), so the parent
knows the last stamp the recorder accepted.
"""
import os
import sys
import time

import numpy as np

from episode_factory import JOINTS, joint_state, true_state
from lam_control.recorder import EpisodeWriter

episode, side = sys.argv[1], sys.argv[2]
fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
writer = EpisodeWriter(episode, flush_period=0.5)
t0 = time.time_ns()
writer.event("start", t0, episode=os.path.basename(episode), task="reach", seed=7)
os.write(fd, b"start\n")
while True:
    ns = time.time_ns()
    writer.write("/joint_states", ns, joint_state(ns, JOINTS, true_state(np.array([(ns - t0) * 1e-9]))[0]))
    os.write(fd, f"{ns}\n".encode())
    time.sleep(0.01)
