"""Metadata filters as parameterised SQL over a chunk (``c``) and its document (``d``).

A field's value is ``coalesce(c.metadata -> key, d.metadata -> key)``: the chunk's
key wins over the document's, as in the hit's ``document.metadata || chunk.metadata``.
Every key and value travels as a bind parameter; only operators are SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from service import metadata_filter as mf

_OPERATORS = {"$eq": "=", "$ne": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


@dataclass
class Compiled:
    """A boolean SQL expression and its named parameters."""

    condition: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)


def compile_filter(tree: mf.Filter, prefix: str = "f") -> Compiled:
    """The WHERE condition for ``tree``; parameter names start with ``prefix``."""
    params: dict[str, Any] = {}
    return Compiled(_Compiler(prefix, params).node(tree), params)


class _Compiler:
    def __init__(self, prefix: str, params: dict[str, Any]) -> None:
        self._prefix = prefix
        self._params = params

    def _param(self, value: Any) -> sql.Composable:
        name = f"{self._prefix}{len(self._params)}"
        self._params[name] = value
        return sql.Placeholder(name)

    def _value(self, name: str) -> sql.Composable:
        key = self._param(name)
        return sql.SQL("coalesce(c.metadata -> {k}::text, d.metadata -> {k}::text)").format(k=key)

    def node(self, tree: mf.Filter) -> sql.Composable:
        if isinstance(tree, mf.And | mf.Or):
            joiner = sql.SQL(" AND " if isinstance(tree, mf.And) else " OR ")
            return sql.SQL("({})").format(joiner.join(self.node(p) for p in tree.parts))
        if isinstance(tree, mf.Not):
            return sql.SQL("(NOT {})").format(self.node(tree.part))
        if isinstance(tree, mf.Exists):
            key = self._param(tree.field)
            return sql.SQL("(c.metadata ? {k}::text OR d.metadata ? {k}::text)").format(k=key)
        if isinstance(tree, mf.In):
            values = self._param([Jsonb(v) for v in tree.values])
            # coalesce: a missing field is false, never NULL, so NOT stays two-valued
            return sql.SQL("coalesce({v} = ANY({p}::jsonb[]), false)").format(
                v=self._value(tree.field), p=values
            )
        return self._compare(tree)

    def _compare(self, tree: mf.Compare) -> sql.Composable:
        value = self._value(tree.field)
        operand = self._param(Jsonb(tree.value))
        test = sql.SQL("{v} {op} {p}::jsonb").format(
            v=value, op=sql.SQL(_OPERATORS[tree.op]), p=operand
        )
        if tree.op in ("$gt", "$gte", "$lt", "$lte"):
            # jsonb orders values of different types too; only like compares with like
            kind = "string" if isinstance(tree.value, str) else "number"
            test = sql.SQL("jsonb_typeof({v}) = {kind} AND {test}").format(
                v=self._value(tree.field), kind=sql.Literal(kind), test=test
            )
        out = sql.SQL("coalesce({}, false)").format(test)
        return sql.SQL("(NOT {})").format(out) if tree.op == "$ne" else out
