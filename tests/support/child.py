"""Run a snippet of Python in a child process: for what must not touch the test runner itself
(freezing its heap, trimming its memory, holding a lock it owns)."""

from __future__ import annotations

import subprocess
import sys

__all__ = ["run_python"]


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -c code args…`` with this interpreter; output captured as text, never raises
    on a failing exit (the caller asserts on ``returncode`` and shows ``stderr``)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
