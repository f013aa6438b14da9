"""Shared test setup: a unique ROS_DOMAIN_ID per test process, so parallel runs never cross-talk."""
import os

# Set before any rclpy context exists; subprocesses started by tests inherit it.
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


import pytest  # noqa: E402


@pytest.fixture
def one_torch_thread():
    """Small models run faster on one intra-op thread, and parallel test processes then never
    oversubscribe the cores (two spinning OpenMP pools make a step 10x slower); lam eval and
    policy_node run torch the same way. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
