"""Runs ``buildkit-operator`` with a sampling profiler (``scale.py --sample``): where the
operator's CPU goes, side by side at two sizes, to see what grows with the number of
Builders. cProfile sees one thread; the operator's passes run in a pool and its watches in
threads of their own, so every thread's stack is sampled instead.

A sample counts where a thread is running Python (or waiting for the interpreter lock to);
a thread blocked in a call that waits (a socket, a lock, a sleep) is idle and not counted.
At exit (SIGTERM, as the bench stops the operator) the counts are written as JSON:
per function, the samples it was on the stack (inclusive) and at its top (own).

Usage: ``python bench/sample.py OUT.json run --all-namespaces ...``
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from types import FrameType

INTERVAL = 0.005
# Functions a thread waits in: a stack whose top is one of these is idle.
IDLE = {
    "select", "poll", "epoll", "wait", "acquire", "sleep", "recv_into", "readinto",
    "read", "recv", "_wait_for_tstate_lock", "accept", "readline", "_worker", "get",
}  # fmt: skip


def _name(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("site-packages/", "buildkit_operator/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_name}"


def main() -> int:
    out = sys.argv.pop(1)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = Counter[str]()
    stop = threading.Event()

    def sample() -> None:
        me = threading.get_ident()
        while not stop.wait(INTERVAL):
            for ident, frame in sys._current_frames().items():
                if ident == me or frame.f_code.co_name in IDLE:
                    continue
                total["busy"] += 1
                own[_name(frame)] += 1
                seen = set()
                f: FrameType | None = frame
                while f is not None:
                    name = _name(f)
                    if name not in seen:
                        seen.add(name)
                        inclusive[name] += 1
                    f = f.f_back

    def dump() -> None:
        stop.set()
        with open(out, "w") as f:
            json.dump(
                {
                    "interval_s": INTERVAL,
                    "busy": total["busy"],
                    "inclusive": dict(inclusive.most_common(300)),
                    "own": dict(own.most_common(300)),
                },
                f,
                indent=1,
            )

    threading.Thread(target=sample, daemon=True, name="sampler").start()

    def on_term(*_: object) -> None:
        dump()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    from buildkit_operator.cli import main as operator_main

    try:
        return operator_main()
    finally:
        if not stop.is_set():
            dump()


if __name__ == "__main__":
    sys.exit(main())
