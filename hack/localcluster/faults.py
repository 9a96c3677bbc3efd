"""Faults on purpose, for the tests of clients against a failing control plane: restart
kube-apiserver or etcd (down for a while), freeze kube-apiserver (SIGSTOP)."""

from __future__ import annotations

import signal
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .api import http_ok, wait_for
from .processes import ComponentProcesses, State, signal_group

if TYPE_CHECKING:
    from .api import Api


class Faults(ComponentProcesses):
    """LocalCluster's faults: each waits until the cluster serves again before it returns."""

    if TYPE_CHECKING:  # provided by LocalCluster

        def _locked(self) -> AbstractContextManager[None]: ...

        @property
        def state(self) -> State: ...

        @property
        def api(self) -> Api: ...

        def _etcd_args(self, state: State) -> list[str]: ...

        def _apiserver_args(self, state: State) -> list[str]: ...

    def restart_apiserver(self, down_for: float = 0.0, timeout: float = 60) -> None:
        """Stop kube-apiserver, leave it down ``down_for`` seconds, start it again and wait
        until it is ready: how clients are tested against a restarting control plane."""
        with self._locked():
            state = self.state
            pid = state.pids.get("kube-apiserver")
            if pid and self._alive(pid):
                self._terminate([("kube-apiserver", pid)], timeout=10)
            time.sleep(down_for)
            self._spawn("kube-apiserver", self._apiserver_args(state), state)
            wait_for(
                lambda: (
                    self._check_running("kube-apiserver")
                    and self.api.request("GET", "/readyz", timeout=5) == "ok"
                ),
                "kube-apiserver /readyz after a restart",
                timeout,
                on_timeout=lambda: self._tail("kube-apiserver"),
            )

    def restart_etcd(self, down_for: float = 0.0, timeout: float = 60) -> None:
        """Stop etcd, leave it down ``down_for`` seconds, start it again on its data and
        wait until the API server is ready on it again: the API server stays up, and answers
        errors (or nothing) meanwhile."""
        with self._locked():
            state = self.state
            pid = state.pids.get("etcd")
            if pid and self._alive(pid):
                self._terminate([("etcd", pid)], timeout=10)
            time.sleep(down_for)
            self._spawn("etcd", self._etcd_args(state), state)
            wait_for(
                lambda: self._check_running("etcd") and http_ok(state.ports["etcd"], "/health"),
                "etcd after a restart",
                timeout,
                on_timeout=lambda: self._tail("etcd"),
            )
            wait_for(
                lambda: self.api.request("GET", "/readyz", timeout=5) == "ok",
                "kube-apiserver /readyz after an etcd restart",
                timeout,
                on_timeout=lambda: self._tail("kube-apiserver"),
            )

    def freeze_apiserver(self, seconds: float) -> None:
        """Stop kube-apiserver's processes (SIGSTOP) for ``seconds``, then let them go on:
        its connections stay open and answer nothing, as a hung server's do."""
        pid = self.state.pids["kube-apiserver"]
        signal_group(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            signal_group(pid, signal.SIGCONT)
