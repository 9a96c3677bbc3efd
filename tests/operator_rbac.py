"""What the operator does with the API, as (apiGroup, resource, verb): the rights the chart
must grant, and all it may grant. One list for the chart's unit test and the RBAC tests
against the API server."""

from __future__ import annotations

Grant = tuple[str, str, str]

# See operator/buildkit_operator/cluster/client.py, cluster/cache.py and runtime/handlers.py.
NEEDED: frozenset[Grant] = frozenset(
    {
        # Builders are only read: they come through kopf.on.event, which keeps no state on
        # them, and the operator writes nothing but their status.
        *(("buildkit.dev", "builders", v) for v in ("get", "list", "watch")),
        *(("buildkit.dev", "builders/status", v) for v in ("get", "patch")),
        # Setting blockOwnerDeletion on the children's owner references, where the
        # OwnerReferencesPermissionEnforcement admission plugin is enabled.
        ("buildkit.dev", "builders/finalizers", "update"),
        *(
            (group, resource, verb)
            for group, resource in (
                ("apps", "deployments"),
                ("", "services"),
                ("", "configmaps"),
                ("", "secrets"),
                ("", "persistentvolumeclaims"),
                ("policy", "poddisruptionbudgets"),
            )
            for verb in ("get", "list", "watch", "create", "patch", "delete")
        ),
        ("", "events", "create"),
        # The addresses of a Builder's daemons behind its Service (kube.daemon_addresses).
        ("discovery.k8s.io", "endpointslices", "list"),
        # Its daemons' pods, listed and watched for their status (kube.daemon_pods, the
        # children's cache): never read one by name, nor its log.
        *(("", "pods", v) for v in ("list", "watch")),
    }
)

# Leader election (cluster/lease.py), in the release namespace only: a Lease is created once,
# then read and renewed by name. `create` cannot be confined to a name; get and update are,
# to LEASE (the chart names the Lease after the release's full name).
LEADER_ELECTION_CREATE: frozenset[Grant] = frozenset({("coordination.k8s.io", "leases", "create")})
LEADER_ELECTION_NAMED: frozenset[Grant] = frozenset(
    {("coordination.k8s.io", "leases", v) for v in ("get", "update")}
)

# The CSR signer (reconcile/signing.py, runtime/handlers.py): cluster-wide whatever the
# scope, as CertificateSigningRequests are cluster-scoped. It reads the requests, decides
# them through their approval subresource, signs through status, and asks the API server
# whether the requester may use the Builder.
SIGNER_NAME = "buildkit.dev/client"
SIGNER: frozenset[Grant] = frozenset(
    {
        *(
            ("certificates.k8s.io", "certificatesigningrequests", v)
            for v in ("get", "list", "watch")
        ),
        ("certificates.k8s.io", "certificatesigningrequests/approval", "update"),
        ("certificates.k8s.io", "certificatesigningrequests/status", "update"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    }
)
# Approving and signing, for its own signer name only.
SIGNER_NAMED: frozenset[Grant] = frozenset(
    {("certificates.k8s.io", "signers", v) for v in ("approve", "sign")}
)
