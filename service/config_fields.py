"""One definition per datastore-config field, and everything derived from it.

A datastore's config (``service.models.DatastoreConfig``) is a frozen dataclass whose
fields are declared with :func:`config_field` (a scalar) or :func:`config_group` (a
nested dataclass, e.g. ``hnsw``). That one declaration gives the field its:

- **name and type**: the attribute and its annotation (``int``, ``float``, ``str``,
  ``bool`` or a ``StrEnum``);
- **path**: the attribute path, ``"chunk_size"`` or ``"hnsw.m"``. The update-mask path
  is ``"config." + path`` (a group's own path selects all its fields) and error messages
  name the field by it. The protobuf field has the same name in the same nesting
  (``DatastoreConfig.hnsw.m``);
- **default**: what a stored config without the key loads as, and what a new datastore
  gets when the request leaves the field unset, unless ``setting`` names the
  ``Settings`` attribute holding the server's default;
- **limits**: ``minimum``/``maximum``, inclusive, checked by
  ``service.core.datastore_config.build_config`` (fields whose rule is more than a
  range, such as ``chunk_size``, have their own check there);
- **JSON key** in ``datastores.config``: the path, unless ``json`` says otherwise
  (``bm25_k1`` is stored as ``{"bm25": {"k1": ...}}``);
- **presence**: ``optional=True`` when the proto field is ``optional``, so a zero
  value is a real choice; otherwise a zero value (0, "", false, enum 0) means "the
  default";
- **re-embedding**: ``fixed_while_reembedding=True`` when the field may not change while
  a re-embedding job runs (the job's shadow table copied or indexes it), checked by
  ``service.core.reembed_rules``;
- **documentation**: ``doc`` (what it means and any rule beyond the range) and, for a
  default derived at create time, ``default_doc``: the datastore-config table of
  docs/configuration.md is generated from them (``scripts/gen_settings_docs.py``).

JSON (:func:`to_json`, :func:`from_json`), update masks, range checks and the
protobuf conversions (``service.api.converters``) walk :func:`leaves`. Adding a field
is one line in ``DatastoreConfig`` (or one of its groups) plus the proto field (and
regenerated stubs); a ``StrEnum`` type also needs its protobuf enum mapping in
``service.api.converters._ENUMS``. Code that acts on the value reads it as an attribute.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

_SPEC = "agentopia.config_field"
C = TypeVar("C")


@dataclass(frozen=True)
class FieldSpec:
    """What :func:`config_field` records about a field (see the module docstring)."""

    minimum: float | None = None
    maximum: float | None = None
    setting: str = ""
    json: str = ""
    optional: bool = False
    fixed_while_reembedding: bool = False
    doc: str = ""
    default_doc: str = ""


@dataclass(frozen=True)
class Leaf:
    """One scalar config field, found by walking the config dataclass."""

    path: str  # "chunk_size", "hnsw.m"
    kind: type[Any]  # int, float, str, bool or a StrEnum subclass
    default: Any
    spec: FieldSpec

    @property
    def mask(self) -> str:
        """The field's update-mask path, also its name in error messages."""
        return f"config.{self.path}"

    @property
    def json_path(self) -> tuple[str, ...]:
        return tuple((self.spec.json or self.path).split("."))

    def is_unset(self, value: Any) -> bool:
        """Whether a requested value means "the default"."""
        if value is None:
            return True
        return not self.spec.optional and not value


def config_field(
    default: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    setting: str = "",
    json: str = "",
    optional: bool = False,
    fixed_while_reembedding: bool = False,
    doc: str,
    default_doc: str = "",
) -> Any:
    """Declare a scalar config field (a dataclass field carrying its :class:`FieldSpec`)."""
    spec = FieldSpec(
        minimum, maximum, setting, json, optional, fixed_while_reembedding, doc, default_doc
    )
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def config_group(kind: type[Any]) -> Any:
    """Declare a nested group of config fields (a dataclass of :func:`config_field`\\ s)."""
    return dataclasses.field(default_factory=kind)


def leaves(cls: type[Any]) -> tuple[Leaf, ...]:
    """Every scalar field of ``cls`` and its groups, in declaration order."""
    found = _LEAVES.get(cls)
    if found is None:
        found = _LEAVES[cls] = tuple(_walk(cls, ""))
    return found


_LEAVES: dict[type[Any], tuple[Leaf, ...]] = {}


def groups(cls: type[Any]) -> tuple[str, ...]:
    """The paths of ``cls``'s nested groups (``"hnsw"``)."""
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name]))


def leaf(cls: type[Any], path: str) -> Leaf:
    """The field of ``cls`` at ``path``; KeyError when there is none."""
    for found in leaves(cls):
        if found.path == path:
            return found
    raise KeyError(path)


def _walk(cls: type[Any], prefix: str) -> typing.Iterator[Leaf]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _walk(typing.cast(type[Any], kind), f"{prefix}{f.name}.")
        elif _SPEC in f.metadata:
            yield Leaf(f"{prefix}{f.name}", kind, f.default, f.metadata[_SPEC])


def get(obj: object, path: str) -> Any:
    """The value at an attribute path (``get(config, "hnsw.m")``)."""
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def build(cls: type[C], values: Mapping[str, Any]) -> C:
    """An instance of ``cls`` from values by path; a path left out takes its default."""
    return typing.cast(C, _build(cls, values, ""))


def _build(cls: type[Any], values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values, f"{path}.")
        elif path in values:
            kwargs[f.name] = values[path]
    return cls(**kwargs)


def to_json(obj: object) -> dict[str, Any]:
    """The JSON object stored in ``datastores.config``."""
    out: dict[str, Any] = {}
    for field in leaves(type(obj)):
        node = out
        *parents, key = field.json_path
        for name in parents:
            node = node.setdefault(name, {})
        value = get(obj, field.path)
        node[key] = value.value if isinstance(value, Enum) else value
    return out


def from_json(cls: type[C], data: Mapping[str, Any]) -> C:
    """Load a stored config; a missing key (a row written before the field existed)
    takes the field's default."""
    values: dict[str, Any] = {}
    for field in leaves(cls):
        node: Mapping[str, Any] = data
        *parents, key = field.json_path
        for name in parents:
            node = node.get(name) or {}
        if key in node:
            values[field.path] = field.kind(node[key])
    return build(cls, values)
