"""What a ``lam`` command returns when it has more to say than an exit code.

Its own module, not lam_control.cli: ``python -m lam_control.cli`` (torchrun, the tests) runs the
CLI as ``__main__``, and a class defined there is not the one the subcommand modules import."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Reply:
    """A command's result for ``lam_control.cli`` to print: lines for stdout (results, --json),
    lines for stderr (per-item errors), and the exit code. Lets the subcommands that live with
    their cores (lam_policy's dataset / train / eval) do no I/O of their own."""

    code: int = 0
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
