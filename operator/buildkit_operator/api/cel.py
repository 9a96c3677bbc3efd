"""Builders of the CRD's CEL rules (``x-kubernetes-validations``) and of schema keywords
pydantic does not generate. The model's validators make each check in Python; these repeat
it for the API server, so that ``kubectl apply`` refuses what the operator would."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# --- CEL rules of the CRD -------------------------------------------------------------------
# Libraries used besides CEL's standard ones: regex (matches), the strings extension as of its
# first version (lastIndexOf, substring, split, trim) and Kubernetes' quantity library
# (isQuantity, quantity, compareTo). The quantity library came with Kubernetes 1.28, and an
# API server offers a library to new expressions one release after it came (so that a
# rollback keeps understanding stored rules): a CRD with these rules needs 1.29 or newer.


def cel_string(text: str) -> str:
    """A CEL string literal (double-quoted: messages and patterns contain single quotes)."""
    assert '"' not in text and "\\" not in text, text
    return f'"{text}"'


def cel_matches(value: str, pattern: str) -> str:
    return f"{value}.matches({cel_string(pattern)})"


def cel_rule(
    rule: str,
    message: str,
    *,
    message_expression: str | None = None,
    field_path: str | None = None,
) -> dict[str, Any]:
    """One x-kubernetes-validations entry: ``message`` is what the API server says when
    ``message_expression`` cannot be evaluated."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if message_expression:
        out["messageExpression"] = message_expression
    if field_path:
        out["fieldPath"] = field_path
    return out


@dataclass(frozen=True)
class CRDSchema:
    """Keywords added to the CRD's schema of a type, beside what pydantic generates.

    For checks that the model's validators already make (with their own messages): this
    repeats them for the API server, and tests/integration/test_admission.py proves the two
    refuse the same Builders.
    """

    # Not hashed (a dict is not hashable): typing hashes the Annotated types that carry it.
    extra: Mapping[str, Any] = field(hash=False)

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        return {**schema, **copy.deepcopy(dict(self.extra))}


def validations(*rules: dict[str, Any], **extra: Any) -> CRDSchema:
    return CRDSchema({**extra, "x-kubernetes-validations": list(rules)})
