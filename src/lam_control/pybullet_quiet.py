"""Import pybullet without its unconditional 'pybullet build time' banner on stderr, so a CLI
error stays one line. The C extension writes it straight to file descriptor 2 on import."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def quiet_native_output(fds: tuple[int, ...] = (1, 2)):
    """Silence file descriptors (C-level printf such as URDF importer warnings) inside the block,
    so `lam ... --json` output stays parseable and errors stay one line."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def import_pybullet():
    """The pybullet module, imported with fd 2 silenced for the duration of the import only."""
    if "pybullet" in sys.modules:
        return sys.modules["pybullet"]
    with quiet_native_output((2,)):
        import pybullet
    return pybullet
