"""Metadata filters: the JSON a caller sends, validated into a small expression tree.

The spelling follows LangChain's and vecs' filters::

    {"year": {"$gte": 2020}, "$or": [{"lang": "en"}, {"tags": {"$in": ["a", "b"]}}]}

A field's condition is a scalar (equality) or an object of operators ``$eq $ne $gt
$gte $lt $lte $in $nin $exists $not``; ``$and``/``$or`` take a list of filters and
``$not`` a filter. Several entries in one object must all hold. Fields are top-level
keys of the hit's metadata (``document.metadata || chunk.metadata``: a chunk's key
wins over its document's).

Logic is two-valued: a comparison on a missing field is false, so ``$ne``, ``$nin``
and ``$not`` match hits that lack the field. Range operators compare numbers with
numbers and strings with strings; a value of another type does not match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidArgument

Scalar = str | float | int | bool | None

MAX_DEPTH = 16
MAX_NODES = 512
MAX_LIST = 1024
MAX_FIELD_CHARS = 256
MAX_STRING_CHARS = 4096

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_RANGE = ("$gt", "$gte", "$lt", "$lte")
_LISTS = ("$in", "$nin")
_LOGICAL = ("$and", "$or", "$not")


@dataclass(frozen=True)
class Compare:
    field: str
    op: str  # one of COMPARISONS
    value: Scalar


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Exists:
    field: str


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    part: Filter


Filter = Compare | In | Exists | And | Or | Not


def parse(data: Any, path: str = "filter") -> Filter | None:
    """The filter tree of ``data``, or None for an empty filter.

    Raises InvalidArgument naming the offending path (``filter.$or[1].year.$gte``).
    """
    if data is None or data == {}:
        return None
    return _Parser().filter(data, path, 0)


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0

    def _count(self, path: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise InvalidArgument(f"{path}: the filter has more than {MAX_NODES} conditions")
        if depth > MAX_DEPTH:
            raise InvalidArgument(f"{path}: the filter nests deeper than {MAX_DEPTH} levels")

    def filter(self, data: Any, path: str, depth: int) -> Filter:
        if not isinstance(data, dict):
            raise InvalidArgument(f"{path}: expected an object, got {_kind(data)}")
        if not data:
            raise InvalidArgument(f"{path}: empty object")
        self._count(path, depth)
        parts: list[Filter] = []
        for key, value in data.items():
            at = f"{path}.{key}"
            if key in ("$and", "$or"):
                items = self._list(value, at, allow_empty=False)
                subs = tuple(self.filter(v, f"{at}[{i}]", depth + 1) for i, v in enumerate(items))
                parts.append(And(subs) if key == "$and" else Or(subs))
            elif key == "$not":
                parts.append(Not(self.filter(value, at, depth + 1)))
            elif isinstance(key, str) and key.startswith("$"):
                raise InvalidArgument(
                    f"{at}: unknown operator {key!r} here; logical operators are "
                    f"{', '.join(_LOGICAL)}, field operators go inside a field's object"
                )
            else:
                parts.append(self.field(_field_name(key, at), value, at, depth + 1))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def field(self, name: str, cond: Any, path: str, depth: int) -> Filter:
        self._count(path, depth)
        if not isinstance(cond, dict):
            if isinstance(cond, list):
                raise InvalidArgument(f"{path}: a list is not a value to compare; use $in")
            return Compare(name, "$eq", _scalar(cond, path))
        if not cond:
            raise InvalidArgument(f"{path}: empty object; give a value or an operator")
        parts: list[Filter] = []
        for op, value in cond.items():
            at = f"{path}.{op}"
            if op in COMPARISONS:
                scalar = _scalar(value, at)
                if op in _RANGE and (scalar is None or isinstance(scalar, bool)):
                    raise InvalidArgument(
                        f"{at}: expected a number or a string, got {_kind(value)}"
                    )
                parts.append(Compare(name, op, scalar))
            elif op in _LISTS:
                items = self._list(value, at, allow_empty=True)
                found: Filter = In(
                    name, tuple(_scalar(v, f"{at}[{i}]") for i, v in enumerate(items))
                )
                parts.append(Not(found) if op == "$nin" else found)
            elif op == "$exists":
                if not isinstance(value, bool):
                    raise InvalidArgument(f"{at}: expected true or false, got {_kind(value)}")
                parts.append(Exists(name) if value else Not(Exists(name)))
            elif op == "$not":
                parts.append(Not(self.field(name, value, at, depth + 1)))
            else:
                raise InvalidArgument(
                    f"{at}: unknown operator {op!r}; field operators are "
                    f"{', '.join(COMPARISONS + _LISTS)}, $exists, $not"
                )
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    @staticmethod
    def _list(value: Any, path: str, *, allow_empty: bool) -> list[Any]:
        if not isinstance(value, list):
            raise InvalidArgument(f"{path}: expected a list, got {_kind(value)}")
        if not value and not allow_empty:
            raise InvalidArgument(f"{path}: expected a non-empty list")
        if len(value) > MAX_LIST:
            raise InvalidArgument(f"{path}: at most {MAX_LIST} items")
        return value


def _field_name(key: Any, path: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"{path}: a field name must be a non-empty string")
    if len(key) > MAX_FIELD_CHARS:
        raise InvalidArgument(f"{path}: field name longer than {MAX_FIELD_CHARS} characters")
    if "\x00" in key:
        raise InvalidArgument(f"{path}: field name contains a NUL character")
    return key


def _scalar(value: Any, path: str) -> Scalar:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{path}: numbers must be finite")
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(f"{path}: contains a NUL character")
        if len(value) > MAX_STRING_CHARS:
            raise InvalidArgument(f"{path}: strings are at most {MAX_STRING_CHARS} characters")
        return value
    raise InvalidArgument(f"{path}: expected a string, number, boolean or null, got {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
