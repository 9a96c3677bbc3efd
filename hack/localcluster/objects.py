"""What the cluster holds for its users: the kwok nodes and StorageClasses made at start,
the pool of PersistentVolumes (made, and made Available again when their claim is gone),
and temporary namespaces for tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .api import ApiError, wait_for
from .config import KUBELET_CLIENT_USER
from .manifests import (
    VOLUME_LABEL,
    NodeSpec,
    node_is_ready,
    node_manifest,
    storage_class_manifest,
    volume_manifest,
)

if TYPE_CHECKING:
    from .api import Api


class ClusterObjects:
    """LocalCluster's objects: ``nodes`` and ``storage_classes`` are what it was made with."""

    dir: Path
    nodes: tuple[NodeSpec, ...]
    storage_classes: dict[str, int]
    _deleting: dict[str, float]  # namespaces left deleting → when they must be gone (monotonic)

    if TYPE_CHECKING:  # provided by LocalCluster

        @property
        def api(self) -> Api: ...

    def _create_cluster_objects(self) -> None:
        api = self.api
        for node in self.nodes:
            api.create("/api/v1/nodes", node_manifest(node))
        for index, name in enumerate(self.storage_classes):
            api.create(
                "/apis/storage.k8s.io/v1/storageclasses", storage_class_manifest(name, index == 0)
            )
        api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", KUBELET_API_ADMIN)
        self.ensure_volumes()

    def _nodes_ready(self) -> bool:
        nodes = self.api.get("/api/v1/nodes")["items"]
        names = {n["metadata"]["name"] for n in nodes if node_is_ready(n)}
        return all(node.name in names for node in self.nodes)

    def _volumes_available(self) -> bool:
        pvs = self.api.get(f"/api/v1/persistentvolumes?labelSelector={VOLUME_LABEL}")["items"]
        return bool(pvs) and all(pv.get("status", {}).get("phase") != "Pending" for pv in pvs)

    def ensure_volumes(self) -> int:
        """Create the missing pool volumes and make Released ones Available. Returns created."""
        api = self.api
        self.recycle_volumes()
        existing = {
            pv["metadata"]["name"]
            for pv in api.get(f"/api/v1/persistentvolumes?labelSelector={VOLUME_LABEL}")["items"]
        }
        wanted = [
            volume_manifest(name, index, self.dir / "volumes")
            for name, count in self.storage_classes.items()
            for index in range(1, count + 1)
        ]
        for pv in wanted:
            _prepare_directory(Path(pv["spec"]["hostPath"]["path"]))
        missing = [pv for pv in wanted if pv["metadata"]["name"] not in existing]
        if missing:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda pv: api.create("/api/v1/persistentvolumes", pv), missing))
        return len(missing)

    @contextlib.contextmanager
    def temporary_namespace(
        self, name: str, delete_timeout: float = 120, *, wait: bool = False
    ) -> Iterator[str]:
        """A fresh namespace whose default ServiceAccount exists (pods need it), deleted
        afterwards.

        Deleting a namespace takes the namespace controller at least five seconds (it waits
        that long after the event before it looks), longer with pods in their grace period;
        waiting for that after every test cost the integration tier a third of its time.
        So a namespace is left deleting while the next test runs, once its claims are gone
        and their volumes recycled for the next test: it must still be gone by its deadline,
        checked at each later namespace's end and by ``wait_namespaces_deleted()`` (the
        session's end), whose error names it and what it still holds. With ``wait`` (pods
        on a real node hold its resources until they have stopped) it is waited for.
        """
        api = self.api
        api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            exist_ok=False,
        )
        wait_for(
            lambda: api.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            f"the default ServiceAccount of namespace {name}",
            timeout=60,
        )
        yield name
        api.delete(f"/api/v1/namespaces/{name}")
        if wait:
            self._wait_deleted(name, delete_timeout)
            self.recycle_volumes()
            return
        # kwok's pods run nothing, so they need no grace period (left to theirs, the
        # namespace controller waits half of it before it looks again), and the claims
        # can go at once rather than when the controller comes to them: the next test
        # finds the pool's volumes Available. Once the namespace is terminating, nothing
        # can make new ones.
        api.delete(f"/api/v1/namespaces/{name}/pods?gracePeriodSeconds=0")
        if api.get(f"/api/v1/namespaces/{name}/persistentvolumeclaims")["items"]:
            api.delete(f"/api/v1/namespaces/{name}/persistentvolumeclaims")
            wait_for(
                lambda: not api.get(f"/api/v1/namespaces/{name}/persistentvolumeclaims")["items"],
                f"the claims of namespace {name} to be deleted",
                timeout=delete_timeout,
                interval=0.2,
                on_timeout=lambda: self._namespace_leftovers(name),
            )
        if self._volumes_claimed_from(name):
            self.recycle_volumes()
        self._deleting[name] = time.monotonic() + delete_timeout
        self._check_deleting()

    def _volumes_claimed_from(self, namespace: str) -> bool:
        pvs = self.api.get(f"/api/v1/persistentvolumes?labelSelector={VOLUME_LABEL}")["items"]
        return any(
            (pv.get("spec", {}).get("claimRef") or {}).get("namespace") == namespace for pv in pvs
        )

    def _wait_deleted(self, name: str, timeout: float) -> None:
        wait_for(
            lambda: not self.api.exists(f"/api/v1/namespaces/{name}"),
            f"namespace {name} to be deleted",
            timeout=timeout,
            interval=0.5,
            on_timeout=lambda: self._namespace_leftovers(name),
        )

    def _check_deleting(self) -> None:
        """Forget the namespaces left deleting that are gone; fail for one past its deadline."""
        now = time.monotonic()
        for name, deadline in list(self._deleting.items()):
            if not self.api.exists(f"/api/v1/namespaces/{name}"):
                del self._deleting[name]
            elif now > deadline:
                del self._deleting[name]
                raise AssertionError(
                    f"namespace {name} was not deleted in time: {self._namespace_leftovers(name)}"
                )

    def wait_namespaces_deleted(self) -> None:
        """Wait until every namespace left deleting is gone, each by its own deadline."""
        for name, deadline in list(self._deleting.items()):
            self._wait_deleted(name, max(deadline - time.monotonic(), 1.0))
            del self._deleting[name]

    def _namespace_leftovers(self, name: str) -> str:
        try:
            status = self.api.get(f"/api/v1/namespaces/{name}").get("status", {})
        except ApiError as exc:
            return str(exc)
        return f"namespace status: {json.dumps(status)}"

    def recycle_volumes(self) -> list[str]:
        """Make pool volumes whose claim is gone Available again (clear spec.claimRef).

        Covers volumes the PV controller already marked Released and those whose claim was
        deleted but not yet noticed. Returns the names of the recycled volumes.
        """
        api = self.api
        recycled = []
        pvs = api.get(f"/api/v1/persistentvolumes?labelSelector={VOLUME_LABEL}")["items"]
        for pv in pvs:
            claim = pv.get("spec", {}).get("claimRef")
            if not claim:
                continue
            phase = pv.get("status", {}).get("phase")
            if phase != "Released":
                if not claim.get("uid"):
                    continue  # pre-bound or being bound: not ours to touch
                namespace, claim_name = claim["namespace"], claim["name"]
                path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim_name}"
                try:
                    live = api.get(path)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    live = None
                if live is not None and live["metadata"]["uid"] == claim["uid"]:
                    continue  # still in use
            name = pv["metadata"]["name"]
            _scrub(pv)
            patch = {
                "metadata": {"resourceVersion": pv["metadata"]["resourceVersion"]},
                "spec": {"claimRef": None},
            }
            try:
                api.merge_patch(f"/api/v1/persistentvolumes/{name}", patch)
            except ApiError as exc:
                if exc.status in (404, 409):
                    continue  # changed meanwhile; the next call looks again
                raise
            recycled.append(name)
        return recycled


# The kubelets authorize the API server's client (webhook authorization): as kubeadm binds it.
KUBELET_API_ADMIN = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "buildkit-operator.dev:kubelet-api-admin"},
    "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:kubelet-api-admin",
    },
    "subjects": [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT_USER}
    ],
}


def _prepare_directory(directory: Path) -> None:
    """A pool volume's directory, made world-writable before any pod mounts it, as hostPath
    provisioners do: rancher's local-path-provisioner creates each volume with
    ``mkdir -m 0777 -p`` (the ``setup`` script of ConfigMap local-path-config in its
    deploy/local-path-storage.yaml, run by its helper pod). The kubelet applies no fsGroup to
    hostPath volumes, so without this a non-root daemon (rootless buildkitd, uid 1000)
    cannot write its cache on them. (``DirectoryOrCreate`` alone makes a root-owned 0755
    directory.) chmod, not mkdir's mode: the umask would narrow that."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)


def _scrub(pv: dict) -> None:
    """Empty a pool volume's directory before it is offered again, as the old ``Recycle``
    reclaim policy did (``rm -rf /scrub/*``): a recycled volume must not hand the next test's
    Builder the last one's build cache (its "cold" build would find every step cached).

    Only directories named after the volume are touched: that is how the pool and the real
    node's local volumes are laid out, and it keeps a mislabelled volume from emptying
    anything else. A directory on another machine (not here) is left alone."""
    spec = pv.get("spec", {})
    path = (spec.get("local") or spec.get("hostPath") or {}).get("path")
    if not path:
        return
    directory = Path(path)
    if directory.name != pv["metadata"]["name"] or not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
