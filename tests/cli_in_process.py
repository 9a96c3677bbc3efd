"""The ``buildkit-operator`` command run inside the test's interpreter: what running the
installed entry point gives (exit status, stdout, stderr) without starting a Python and
importing the operator for every call. The entry point is ``sys.exit(main())``; an uncaught
exception is a traceback on stderr and exit status 1, as the interpreter would print it.

tests/unit/test_cli.py keeps real subprocesses of the installed command, so the entry point
itself stays tested."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import traceback
from pathlib import Path

from buildkit_operator.cli import main

OPERATOR = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "buildkit-operator"


def _exit_status(code: object, stderr: io.StringIO) -> int:
    """What the interpreter makes of ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=stderr)
    return 1


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``buildkit-operator ARGS`` with ``stdin`` as its standard input (empty if None)."""
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = _exit_status(main(list(args)), err)
            except SystemExit as exit_:
                status = _exit_status(exit_.code, err)
            except Exception:
                traceback.print_exc(file=err)
                status = 1
    finally:
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(
        [str(OPERATOR), *args], status, stdout=out.getvalue(), stderr=err.getvalue()
    )
