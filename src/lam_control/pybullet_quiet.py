"""Import pybullet without its unconditional 'pybullet build time' banner on stderr, so a CLI
error stays one line. The C extension writes it straight to file descriptor 2 on import."""
from __future__ import annotations

import os
import sys


def import_pybullet():
    """The pybullet module, imported with fd 2 silenced for the duration of the import only."""
    if "pybullet" in sys.modules:
        return sys.modules["pybullet"]
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import pybullet
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return pybullet
