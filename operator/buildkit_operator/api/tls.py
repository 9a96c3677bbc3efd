"""The tls section of the spec: which certificates the daemons serve, and the extra names
they must cover. Only the spec; issuing and checking certificates is ``pki``'s."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .camel_model import CamelModel
from .cel import CRDSchema, cel_matches, cel_rule, validations
from .object_names import check_object_name, object_name_rule
from .syntax import MAX_OBJECT_NAME_LENGTH, MAX_SAN_LENGTH, MAX_SANS

# A DNS name, optionally a wildcard, each label at most 63 characters.
_SAN_DNS_PATTERN = (
    r"^([*][.])?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"([.][A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)


def _ipv6_pattern() -> str:
    """An IPv6 address as Python's ipaddress reads one (no zone): eight groups, or fewer
    around one '::', the last two groups optionally written as an IPv4 address."""
    group = "[0-9A-Fa-f]{1,4}"
    octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    ipv4 = f"{octet}([.]{octet}){{3}}"
    forms = [f"({group}:){{7}}{group}", f"({group}:){{6}}{ipv4}"]
    # '::' stands for at least one group of zeros: `before` groups, then '::', then the rest.
    forms.append(f"::({group}(:{group}){{0,6}})?")
    forms.append(f"::({group}:){{0,5}}{ipv4}")
    for before in range(1, 8):
        head = f"({group}:){{{before}}}:"
        if before <= 6:
            forms.append(f"{head}({group}(:{group}){{0,{6 - before}}})?")
        else:
            forms.append(head)
        if before <= 5:
            forms.append(f"{head}({group}:){{0,{5 - before}}}{ipv4}")
    return "^(" + "|".join(forms) + ")$"


_IPV6_PATTERN = _ipv6_pattern()

_SAN_DNS_RE = re.compile(_SAN_DNS_PATTERN)


def revoked_at(value: str) -> datetime | None:
    """An RFC 3339 time as the API server's date-time format takes it, in UTC; None when
    it has no zone or does not parse."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


class TLSSpec(CamelModel):
    """Mutual TLS between clients and buildkitd."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!has(self.mode) || self.mode != 'secret' || "
                        "(has(self.secretName) && self.secretName != '')"
                    ),
                    "message": "tls.secretName is required when tls.mode is secret",
                    "fieldPath": ".secretName",
                },
                {
                    "rule": "!has(self.revokedBefore) || !has(self.mode) || self.mode == 'auto'",
                    "message": (
                        "tls.revokedBefore applies to the certificates the operator signs "
                        "(tls.mode auto)"
                    ),
                    "fieldPath": ".revokedBefore",
                },
            ]
        }
    )

    mode: Literal["auto", "secret", "disabled"] = Field(
        "auto",
        description=(
            "auto: the operator runs a CA per Builder and issues server and client "
            "certificates; secret: tls.secretName (keys ca.pem, cert.pem, key.pem) is the "
            "server certificate; disabled: plain TCP (not recommended)."
        ),
    )
    secret_name: Annotated[
        str | None,
        validations(object_name_rule(allow_empty=True), maxLength=MAX_OBJECT_NAME_LENGTH),
    ] = Field(None, description="Secret holding the server certificate when tls.mode is secret.")
    extra_sans: Annotated[
        list[
            Annotated[
                str,
                validations(
                    cel_rule(
                        f"{cel_matches('self', _SAN_DNS_PATTERN)} || "
                        f"{cel_matches('self', _IPV6_PATTERN)}",
                        "must be an IP address or a DNS name (a leading '*.' is allowed)",
                        message_expression=(
                            "self.contains('%') && "
                            + cel_matches("self.split('%')[0]", _IPV6_PATTERN)
                            + " ? "
                            '"\'" + self + "\': an IP address in a certificate cannot carry a '
                            'zone" : "\'" + self + "\' is neither an IP address nor a DNS name '
                            "(a leading '*.' is allowed)\""
                        ),
                    ),
                    maxLength=MAX_SAN_LENGTH,
                ),
            ]
        ],
        Field(max_length=MAX_SANS),
    ] = Field(
        default_factory=list,
        alias="extraSANs",
        description="Extra DNS names or IP addresses for the server certificate.",
    )

    revoked_before: Annotated[str | None, CRDSchema({"format": "date-time"})] = Field(
        None,
        description=(
            "With tls.mode auto: refuse every client certificate issued before this time "
            "(RFC 3339, e.g. 2026-12-03T10:00:00Z), the shared one and users' own. The "
            "operator replaces the CA that signs client certificates and the daemons restart "
            "onto it once their builds end (at most drain.maxWaitSeconds); the CA clients "
            "verify the daemons with does not change. Users then run `buildkit-operator "
            "connect` again. To cut one person off, remove their use of the Builder first "
            "(RBAC), then set this to now."
        ),
    )

    shared_client_certificate: bool = Field(
        True,
        description=(
            "With tls.mode auto: also keep a client certificate shared by every user in the "
            "Secret <name>-client-tls (valid a year). Without it, each user gets a "
            "short-lived certificate of their own through a CertificateSigningRequest for "
            "the signer buildkit.dev/client (`buildkit-operator connect`), and the Secret "
            "is deleted."
        ),
    )

    @field_validator("extra_sans")
    @classmethod
    def _sans(cls, sans: list[str]) -> list[str]:
        for san in sans:
            try:
                address = ipaddress.ip_address(san)
            except ValueError:
                pass
            else:
                if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
                    raise ValueError(f"{san!r}: an IP address in a certificate cannot carry a zone")
                continue
            labels = san.removeprefix("*.").split(".")
            if (
                len(san) > 253
                or not _SAN_DNS_RE.match(san)
                or any(len(label) > 63 for label in labels)
            ):
                raise ValueError(
                    f"{san!r} is neither an IP address nor a DNS name (a leading '*.' is allowed)"
                )
        return sans

    @model_validator(mode="before")
    @classmethod
    def _secret_name_present(cls, data: Any) -> Any:
        # With mode secret, an absent secretName is checked as an empty one, so that the
        # problem is reported at spec.tls.secretName rather than at spec.tls.
        if (
            isinstance(data, Mapping)
            and data.get("mode") == "secret"
            and "secretName" not in data
            and "secret_name" not in data
        ):
            return {**data, "secretName": ""}
        return data

    @field_validator("revoked_before")
    @classmethod
    def _revoked_before(cls, value: str | None) -> str | None:
        if value is not None and revoked_at(value) is None:
            raise ValueError(
                f"{value!r} is not an RFC 3339 time with a zone (e.g. 2026-12-03T10:00:00Z)"
            )
        return value

    @property
    def revoked_before_time(self) -> datetime | None:
        return revoked_at(self.revoked_before) if self.revoked_before else None

    @field_validator("secret_name")
    @classmethod
    def _secret_name(cls, name: str | None, info: ValidationInfo) -> str | None:
        if not name:
            if info.data.get("mode") == "secret":
                raise ValueError("required when tls.mode is secret")
            return name
        return check_object_name(name)
