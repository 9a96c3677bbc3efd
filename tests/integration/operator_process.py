"""``buildkit-operator run`` as a subprocess in its own process group, for the tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from localcluster.api import wait_for

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess:
    """``buildkit-operator run --all-namespaces`` as a subprocess with its own log file."""

    def __init__(self, command: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.command = list(command)
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        if self.running:
            return self
        with open(self.log_path, "ab") as out:
            out.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(self.command)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO,
                start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM the operator's process group, SIGKILL it after timeout seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=10)
        else:
            # The leader exited: make sure nothing it started lingers in its group.
            self._signal(signal.SIGKILL)
        return self.process.returncode

    def kill(self) -> int | None:
        """SIGKILL the operator's process group: it gets no chance to finish anything."""
        if self.process is None:
            return None
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        return self.process.returncode

    def restart(self, timeout: float = 15) -> OperatorProcess:
        self.stop(timeout)
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the process hangs as it is, connections open, until resumed."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait until the log matches the regular expression pattern."""
        regex = re.compile(pattern)

        def check() -> re.Match[str] | None:
            if not self.running:
                raise AssertionError(f"operator exited ({self.returncode}):\n{self.log()[-4000:]}")
            return regex.search(self.log())

        return wait_for(check, f"operator log to match {pattern!r}", timeout)


def operator_binary() -> Path:
    candidate = REPO / ".venv" / "bin" / "buildkit-operator"
    if candidate.exists():
        return candidate
    return Path(sys.executable).parent / "buildkit-operator"
