"""The Service in front of the daemons, and the opt-in that lets it reach beyond the
cluster without TLS."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool

from .camel_model import CamelModel


class ServiceSpec(CamelModel):
    """The Service in front of the daemons."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="Service type; buildkitd is served on port 1234."
    )
    allow_without_tls: StrictBool = Field(
        False,
        alias="allowWithoutTLS",
        description=(
            "Allow service.type NodePort or LoadBalancer with tls.mode disabled, which is "
            "otherwise refused: it exposes an unauthenticated builder beyond the cluster "
            "(anyone who reaches the port can run builds on it, read its cache and use its "
            "network access). Set it only where the network itself admits nobody else, such "
            "as an isolated lab network or a load balancer restricted to trusted sources."
        ),
    )
