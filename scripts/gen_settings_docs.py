"""Regenerate the tables of docs/configuration.md from their one definition each.

- the service settings, from ``service.settings.Settings``;
- the datastore config, from ``service.models.DatastoreConfig``'s ``config_field``
  declarations (``service.config_fields``).

Each table sits between two marker comments; everything else in the file is hand-written.
``--check`` fails when a checked-in table differs from what the fields give (CI drift
check, run by ``make lint``), so a new setting or config field cannot land without its row.
"""

from __future__ import annotations

import json
import sys
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import annotated_types
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service import config_fields
from service.config_fields import Leaf
from service.models import DatastoreConfig
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
PREFIX = Settings.model_config.get("env_prefix", "")


def _variable(name: str, field: FieldInfo) -> str:
    main = f"`{PREFIX}{name.upper()}`"
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        others = [a for a in alias.choices if isinstance(a, str) and a != f"{PREFIX}{name.upper()}"]
        if others:
            main += " (or " + ", ".join(f"`{a}`" for a in others) + ")"
    return main


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "unset" if not value.get_secret_value() else "(secret)"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _limits(field: FieldInfo) -> str:
    parts: list[str] = []
    for item in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            bound = getattr(item, attr, None)
            if bound is not None and isinstance(item, annotated_types.BaseMetadata):
                parts.append(f"{sign} {bound}")
        max_length = getattr(item, "max_length", None)
        if max_length is not None:
            parts.append(f"at most {max_length} characters")
    if typing.get_origin(field.annotation) is typing.Literal:
        choices = [f"`{c}`" for c in typing.get_args(field.annotation)]
        return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return ", ".join(parts)


def settings_table() -> str:
    rows = [
        "| Environment variable | Default | Limits | Meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| {_variable(name, field)} | {_default(field)} | {_limits(field)} | {meaning} |"
        )
    return "\n".join(rows)


def _config_default(leaf: Leaf) -> str:
    if leaf.spec.default_doc:
        return leaf.spec.default_doc
    if leaf.spec.setting:
        value = Settings.model_fields[leaf.spec.setting].default
        return f"`{PREFIX}{leaf.spec.setting.upper()}` ({_config_value(value)})"
    return _config_value(leaf.default)


def _config_value(value: object) -> str:
    if isinstance(value, Enum):
        return f"`{value.name}`"  # the API's name (VECTOR), not the stored value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _config_limits(leaf: Leaf) -> str:
    low, high = leaf.spec.minimum, leaf.spec.maximum
    if isinstance(leaf.kind, type) and issubclass(leaf.kind, Enum):
        return ", ".join(f"`{member.name}`" for member in leaf.kind)
    if low is not None and high is not None:
        return f"{low:,}..{high:,}"
    if low is not None:
        return f"≥ {low:,}"
    if high is not None:
        return f"≤ {high:,}"
    return ""


def config_table() -> str:
    rows = [
        "| field | default | limits | meaning | fixed while re-embedding |",
        "|---|---|---|---|---|",
    ]
    for leaf in config_fields.leaves(DatastoreConfig):
        meaning = leaf.spec.doc.replace("|", "\\|").replace("\n", " ")
        fixed = "yes" if leaf.spec.fixed_while_reembedding else ""
        rows.append(
            f"| `{leaf.path}` | {_config_default(leaf)} | {_config_limits(leaf)} | {meaning} "
            f"| {fixed} |"
        )
    return "\n".join(rows)


# (name, table): each sits between "<!-- {name}:begin ... -->" and "<!-- {name}:end -->".
TABLES: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "datastore-config": config_table,
}


def _markers(name: str) -> tuple[str, str]:
    begin = f"<!-- {name}:begin (generated by scripts/gen_settings_docs.py; do not edit) -->"
    return begin, f"<!-- {name}:end -->"


def render(text: str) -> str:
    for name, table in TABLES.items():
        begin, end = _markers(name)
        head, sep, rest = text.partition(begin)
        _, sep2, tail = rest.partition(end)
        if not sep or not sep2:
            raise SystemExit(f"{DOC} lacks the markers {begin!r} ... {end!r}")
        text = f"{head}{begin}\n{table()}\n{end}{tail}"
    return text


def _section(text: str, name: str) -> str:
    begin, end = _markers(name)
    return text.partition(begin)[2].partition(end)[0]


def main() -> int:
    current = DOC.read_text()
    fresh = render(current)
    if "--check" in sys.argv:
        stale = [n for n in TABLES if _section(current, n) != _section(fresh, n)]
        if stale or fresh != current:
            names = " and ".join(stale)
            print(f"{DOC.relative_to(ROOT)}: stale generated table(s): {names}; run `make docs`")
            return 1
        print("generated tables are up to date: " + ", ".join(TABLES))
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
