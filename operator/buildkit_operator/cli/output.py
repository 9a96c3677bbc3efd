"""How `render` prints objects: YAML that every reader takes as meant. Multi-line strings
(buildkitd.toml) are literal blocks; a string another YAML reader would take for a number,
a boolean or a null (Go's, which kubectl uses, reads `2214636903781e04` as a float) is
quoted."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TextIO

import yaml


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (buildkitd.toml) as literal blocks, readable as written; strings
    another YAML reader could take for something else, quoted."""


# Plain scalars that YAML 1.1 readers (Go's, which kubectl uses) resolve to something other
# than a string, beyond what PyYAML itself resolves: numbers in any notation (`2214636903781e04`,
# `1_000`, `0x1f`, `12:30`, dates), and the 1.1 booleans and nulls in every case.
_NUMBER_LIKE = re.compile(r"[-+.]?[0-9][0-9a-zA-Z._:+-]*")
_WORDS = {
    *["y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"],
    *[".inf", "-.inf", "+.inf", ".nan"],
}


def needs_quotes(value: str) -> bool:
    """Whether ``value`` printed plain could be read back as anything but this string."""
    if _NUMBER_LIKE.fullmatch(value) or value.lower() in _WORDS or value != value.strip():
        return True
    try:
        return bool(yaml.safe_load(value) != value)
    except yaml.YAMLError:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else '"' if value and needs_quotes(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_stream(objects: Sequence[dict[str, Any]], out: TextIO) -> None:
    out.write(
        yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, explicit_start=True, width=100)
    )
