"""`buildkit-operator render | kubectl apply -f -`: what `render` prints must read back, in
kubectl's YAML reader (Go's), as the objects the operator means. About one config hash in a
thousand (`2774485967949e74`) is a float to that reader, while PyYAML reads it as a string,
so only the real kubectl can prove it."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from buildkit_operator.api import Builder
from buildkit_operator.api.defaults import DEFAULTS
from buildkit_operator.cli.main import render_objects
from buildkit_operator.cli.output import dump_stream

pytestmark = pytest.mark.integration

# Names whose config hash (in namespace default) is a finite float to a YAML 1.1 reader:
# found by search, pinned so that every run tries them.
FLOAT_LIKE = ["b27010", "b36857"]
NAMES = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


def _builders(names: list[str]) -> list[Builder]:
    return [
        Builder.from_manifest(
            {
                "apiVersion": "buildkit.dev/v1alpha1",
                "kind": "Builder",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {},
            }
        )
        for name in names
    ]


def _json_stream(text: str) -> list[Any]:
    decoder, at, out = json.JSONDecoder(), 0, []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return out
        obj, at = decoder.raw_decode(text, at)
        out.append(obj)


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(names=FLOAT_LIKE)
@given(names=st.lists(NAMES, min_size=10, max_size=30, unique=True))
def test_kubectl_reads_back_what_render_prints(kubectl: Any, names: list[str]) -> None:
    objects = render_objects(_builders(names), datetime.now(UTC), DEFAULTS)
    printed = io.StringIO()
    dump_stream(objects, printed)
    out = kubectl("create", "--dry-run=client", "-o", "json", "-f", "-", input=printed.getvalue())
    read = _json_stream(out)
    meant = json.loads(json.dumps(objects))
    assert len(read) == len(meant)
    for got, want in zip(read, meant, strict=True):
        assert got == want, f"{want['kind']} {want['metadata']['name']} reads back differently"
