"""Metadata filters: parsing the caller's JSON (service/metadata_filter.py) and compiling
the tree into parameterised SQL (service/storage/filters.py), without a database."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import metadata_filter as mf
from service.errors import InvalidArgument
from service.storage.filters import compile_filter


@pytest.mark.parametrize(
    ("data", "tree"),
    [
        ({"lang": "en"}, mf.Compare("lang", "$eq", "en")),
        ({"year": {"$gte": 2020}}, mf.Compare("year", "$gte", 2020)),
        ({"tag": {"$in": ["a", 1, None]}}, mf.In("tag", ("a", 1, None))),
        ({"tag": {"$nin": []}}, mf.Not(mf.In("tag", ()))),
        ({"tag": {"$exists": True}}, mf.Exists("tag")),
        ({"tag": {"$exists": False}}, mf.Not(mf.Exists("tag"))),
        ({"year": {"$not": {"$lt": 3}}}, mf.Not(mf.Compare("year", "$lt", 3))),
        (
            {"year": {"$gt": 1, "$lt": 9}},
            mf.And((mf.Compare("year", "$gt", 1), mf.Compare("year", "$lt", 9))),
        ),
        (
            {"a": 1, "$or": [{"b": True}, {"$not": {"c": "x"}}]},
            mf.And(
                (
                    mf.Compare("a", "$eq", 1),
                    mf.Or((mf.Compare("b", "$eq", True), mf.Not(mf.Compare("c", "$eq", "x")))),
                )
            ),
        ),
    ],
)
def test_parse_builds_the_tree(data: dict[str, Any], tree: mf.Filter) -> None:
    assert mf.parse(data) == tree


def test_an_empty_filter_is_none() -> None:
    assert mf.parse(None) is None
    assert mf.parse({}) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"$or": [{"a": 1}, {"y": {"$gte": True}}]}, "filter.$or[1].y.$gte: expected a number"),
        ({"a": {"$in": [1, [2]]}}, "filter.a.$in[1]: expected a string, number"),
        ({"a": float("nan")}, "filter.a: numbers must be finite"),
        ({"a": {"$regex": "x"}}, "filter.a.$regex: unknown operator"),
        ({"": 1}, "filter.: a field name must be a non-empty string"),
        ([{"a": 1}], "filter: expected an object, got a list"),
    ],
)
def test_a_bad_filter_names_its_path(data: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        mf.parse(data)


def test_nesting_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(40):
        deep = {"$not": deep}
    with pytest.raises(InvalidArgument, match="deeper than"):
        mf.parse(deep)
    wide = {"$or": [{"a": i} for i in range(1000)]}
    with pytest.raises(InvalidArgument, match="more than 512 conditions"):
        mf.parse(wide)
    with pytest.raises(InvalidArgument, match="at most 1024 items"):
        mf.parse({"a": {"$in": list(range(mf.MAX_LIST + 1))}})


PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# Every word the compiler writes itself; anything else in the SQL text came from the caller.
SQL_WORDS = {"coalesce", "c", "d", "metadata", "text", "jsonb", "jsonb_typeof", "ANY"} | {
    "AND", "OR", "NOT", "false", "number", "string",
}  # fmt: skip


def test_compiled_sql_reads_the_chunk_key_before_the_documents() -> None:
    compiled = compile_filter(mf.Compare("year", "$gt", 2020), prefix="p")
    text = compiled.condition.as_string(None)
    assert "coalesce(c.metadata -> %(p0)s::text, d.metadata -> %(p0)s::text)" in text
    assert "jsonb_typeof" in text  # a range compares like with like
    assert compiled.params["p0"] == "year"


# Any field name and any scalar: they travel as parameters, never as SQL text.
names = st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s and s[0] != "$")
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20).filter(lambda s: "\x00" not in s),
)
ranges = st.one_of(st.integers(-100, 100), st.text(max_size=5).filter(lambda s: "\x00" not in s))
ops = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"])


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(ops)
    if op in ("$in", "$nin"):
        return {op: draw(st.lists(scalars, max_size=4))}
    if op == "$exists":
        return {op: draw(st.booleans())}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return {op: draw(ranges)}
    return {op: draw(scalars)}


filters = st.recursive(
    st.dictionaries(names, conditions(), min_size=1, max_size=3),
    lambda inner: st.one_of(
        st.builds(lambda parts: {"$or": parts}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda parts: {"$and": parts}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda part: {"$not": part}, inner),
    ),
    max_leaves=8,
)


@given(data=filters)
def test_every_key_and_value_is_a_bound_parameter(data: dict[str, Any]) -> None:
    tree = mf.parse(data)
    assert tree is not None
    compiled = compile_filter(tree)
    text = compiled.condition.as_string(None)
    # each parameter is used, each placeholder bound; what is left is operators only
    assert set(PLACEHOLDER.findall(text)) == set(compiled.params)
    skeleton = PLACEHOLDER.sub("?", text)
    assert set(re.findall(r"\w+", skeleton)) <= SQL_WORDS, skeleton
    assert text.count("(") == text.count(")")
