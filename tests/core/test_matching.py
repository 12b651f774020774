"""Topic trie and headers matching, checked against RabbitMQ's rules.

The trie is compared with a deliberately naive word-list matcher on random
patterns drawn from a tiny alphabet (including the empty word and the
wildcards themselves as routing-key words) so that collisions, shared
prefixes and degenerate '#' runs actually occur.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqlite.core.errors import PreconditionFailed
from amqlite.core.headers import headers_match, validate_x_match
from amqlite.core.topic import TopicMatcher


# --------------------------------------------------------------------------
# Reference topic matcher
# --------------------------------------------------------------------------


def _words(key: str) -> list[str]:
    # RabbitMQ: the empty key is zero words; otherwise split on every dot.
    return key.split(".") if key else []


def _reference_words(pattern: list[str], key: list[str]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_reference_words(rest, key[skip:]) for skip in range(len(key) + 1))
    if not key:
        return False
    if head == "*" or head == key[0]:
        return _reference_words(rest, key[1:])
    return False


def reference_match(pattern: str, key: str) -> bool:
    return _reference_words(_words(pattern), _words(key))


def test_reference_matcher_itself() -> None:
    # The property tests are only as good as this oracle.
    assert reference_match("a.*.c", "a.b.c")
    assert not reference_match("a.*.c", "a.c")
    assert reference_match("a.#.c", "a.c")
    assert reference_match("a.#.c", "a.x.y.c")
    assert not reference_match("a.#.c", "a.x.y")
    assert reference_match("#", "")
    assert not reference_match("*", "")


def _bound(*pairs: tuple[str, object]) -> TopicMatcher:
    matcher = TopicMatcher()
    for pattern, destination in pairs:
        matcher.bind(pattern, destination)
    return matcher


# --------------------------------------------------------------------------
# Topic: edge cases
# --------------------------------------------------------------------------


def test_literal_star_and_hash() -> None:
    m = _bound(("a.b.c", 1), ("a.*.c", 2), ("a.#", 3), ("*.b.*", 4), ("x", 5))
    assert m.match("a.b.c") == {1, 2, 3, 4}
    assert m.match("a.z.c") == {2, 3}
    assert m.match("a") == {3}
    assert m.match("q.b.r") == {4}
    assert m.match("a.b.c.d") == {3}
    assert m.match("nothing") == set()


def test_hash_alone_matches_every_key_including_empty() -> None:
    m = _bound(("#", "all"))
    for key in ["", "a", ".", "a.b.c", "..", "#", "*"]:
        assert m.match(key) == {"all"}, key


def test_empty_key_is_zero_words() -> None:
    # RabbitMQ's split_topic_key(<<>>) is []: '*' needs one word, so it does
    # not match the empty key; the empty pattern matches only the empty key.
    m = _bound(("*", "star"), ("", "empty"), ("#", "hash"), ("*.#", "star-hash"), ("#.*", "hash-star"))
    assert m.match("") == {"empty", "hash"}
    assert m.match("a") == {"star", "hash", "star-hash", "hash-star"}


def test_empty_words_are_real_words() -> None:
    m = _bound(("a..b", "three"), ("a.*.b", "star"), ("a.b", "two"), ("*.*", "pair"), ("a.", "a-dot"))
    assert m.match("a..b") == {"three", "star"}
    assert m.match("a.b") == {"two", "pair"}
    assert m.match(".") == {"pair"}
    assert m.match("a.") == {"pair", "a-dot"}
    assert m.match("a...b") == set()


def test_hash_dot_hash_and_star_hash() -> None:
    m = _bound(("#.#", "hh"), ("*.#", "sh"), ("#.*", "hs"))
    assert m.match("") == {"hh"}
    assert m.match("a") == {"hh", "sh", "hs"}
    assert m.match("a.b.c") == {"hh", "sh", "hs"}


def test_hash_in_the_middle() -> None:
    m = _bound(("a.#.b", 1))
    assert m.match("a.b") == {1}
    assert m.match("a.x.b") == {1}
    assert m.match("a.x.y.z.b") == {1}
    assert m.match("a.b.b") == {1}
    assert m.match("a.b.x") == set()
    assert m.match("b") == set()


def test_wildcard_words_in_routing_key_are_literals() -> None:
    m = _bound(("a", 1), ("*", 2), ("#.x", 3))
    assert m.match("*") == {2}
    assert m.match("#") == {2}
    assert m.match("#.x") == {3}


def test_many_hashes_do_not_blow_up() -> None:
    # Naive backtracking is exponential here; the set-of-nodes walk is not.
    pattern = ".".join(["#"] * 30) + ".z"
    m = _bound((pattern, "deep"))
    key = ".".join(["a"] * 200)
    assert m.match(key) == set()
    assert m.match(key + ".z") == {"deep"}


def test_destination_reported_once_when_several_patterns_match() -> None:
    m = _bound(("a.*", "q"), ("#", "q"), ("a.b", "q"), ("a.b", "other"))
    result = m.match("a.b")
    assert result == {"q", "other"}
    assert len(m) == 4


def test_bind_is_idempotent() -> None:
    m = TopicMatcher()
    m.bind("a.#", "q")
    m.bind("a.#", "q")
    assert len(m) == 1
    assert m.unbind("a.#", "q") is True
    assert m.match("a.b") == set()
    assert len(m) == 0


def test_unbind_reports_existence() -> None:
    m = _bound(("a.b", "q"))
    assert m.unbind("a.b", "other") is False
    assert m.unbind("a.c", "q") is False
    assert m.unbind("a.b.c", "q") is False
    assert m.unbind("a", "q") is False
    assert len(m) == 1
    assert m.unbind("a.b", "q") is True
    assert m.unbind("a.b", "q") is False
    assert len(m) == 0


def test_unbind_keeps_siblings_and_prefixes() -> None:
    m = _bound(("a", 1), ("a.b", 2), ("a.b.c", 3), ("a.*", 4), ("a.#", 5))
    assert m.unbind("a.b", 2)
    assert m.match("a.b") == {4, 5}
    assert m.match("a.b.c") == {3, 5}
    assert m.unbind("a.b.c", 3)
    assert m.match("a.b.c") == {5}
    assert m.match("a") == {1, 5}


def _is_pristine(m: TopicMatcher) -> bool:
    root = m._root
    return not (root.children or root.star or root.hash or root.destinations)


def test_unbind_prunes_empty_nodes() -> None:
    m = TopicMatcher()
    patterns = ["a.b.c", "a.*.#", "#", "#.#.x", "*..*", "", "a.b"]
    for i, pattern in enumerate(patterns):
        m.bind(pattern, i)
    for i, pattern in enumerate(patterns):
        assert m.unbind(pattern, i)
    assert _is_pristine(m)


def test_unbind_prunes_only_the_dead_branch() -> None:
    m = _bound(("a.b.c.d", 1), ("a.x", 2))
    assert m.unbind("a.b.c.d", 1)
    a = m._root.children["a"]
    assert list(a.children) == ["x"]


# --------------------------------------------------------------------------
# Topic: properties
# --------------------------------------------------------------------------

# Small alphabets so that random patterns and keys actually meet.
_PATTERN_WORDS = st.sampled_from(["a", "b", "", "*", "#"])
_KEY_WORDS = st.sampled_from(["a", "b", "", "c", "*", "#"])
_patterns = st.lists(_PATTERN_WORDS, max_size=5).map(".".join)
_keys = st.lists(_KEY_WORDS, max_size=6).map(".".join)
_destinations = st.integers(0, 3)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), _patterns, _destinations), max_size=25),
    keys=st.lists(_keys, min_size=1, max_size=8),
)
def test_trie_agrees_with_reference(
    ops: list[tuple[bool, str, int]], keys: list[str]
) -> None:
    matcher = TopicMatcher()
    model: set[tuple[str, int]] = set()
    for is_bind, pattern, destination in ops:
        if is_bind:
            matcher.bind(pattern, destination)
            model.add((pattern, destination))
        else:
            existed = (pattern, destination) in model
            assert matcher.unbind(pattern, destination) is existed
            model.discard((pattern, destination))
        assert len(matcher) == len(model)
    for key in keys:
        expected = {d for pattern, d in model if reference_match(pattern, key)}
        assert matcher.match(key) == expected, key


@settings(max_examples=200, deadline=None)
@given(bindings=st.lists(st.tuples(_patterns, _destinations), max_size=15))
def test_unbinding_everything_leaves_an_empty_trie(
    bindings: list[tuple[str, int]]
) -> None:
    matcher = TopicMatcher()
    for pattern, destination in bindings:
        matcher.bind(pattern, destination)
    for pattern, destination in set(bindings):
        assert matcher.unbind(pattern, destination)
    assert len(matcher) == 0
    assert _is_pristine(matcher)


# --------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------


def test_all_requires_every_key() -> None:
    args = {"x-match": "all", "format": "pdf", "type": "report"}
    assert headers_match(args, {"format": "pdf", "type": "report", "extra": 1})
    assert not headers_match(args, {"format": "pdf"})
    assert not headers_match(args, {"format": "pdf", "type": "log"})
    assert not headers_match(args, None)


def test_all_is_the_default() -> None:
    args = {"format": "pdf", "type": "report"}
    assert headers_match(args, {"format": "pdf", "type": "report"})
    assert not headers_match(args, {"format": "pdf"})


def test_any_requires_one_key() -> None:
    args = {"x-match": "any", "format": "pdf", "type": "report"}
    assert headers_match(args, {"format": "pdf"})
    assert headers_match(args, {"type": "report", "format": "zip"})
    assert not headers_match(args, {"format": "zip", "type": "log"})
    assert not headers_match(args, {})
    assert not headers_match(args, None)


def test_no_relevant_keys() -> None:
    assert headers_match({}, None)
    assert headers_match({"x-match": "all", "x-foo": 1}, {"a": 1})
    assert not headers_match({"x-match": "any"}, {"a": 1})
    assert not headers_match({"x-match": "any", "x-foo": 1}, {"x-foo": 1})


def test_x_keys_ignored_without_with_x() -> None:
    all_args = {"x-match": "all", "x-tenant": "t1", "k": 1}
    assert headers_match(all_args, {"k": 1})
    assert headers_match(all_args, {"k": 1, "x-tenant": "other"})
    any_args = {"x-match": "any", "x-tenant": "t1"}
    assert not headers_match(any_args, {"x-tenant": "t1"})


def test_all_with_x_compares_x_keys() -> None:
    args = {"x-match": "all-with-x", "x-tenant": "t1", "k": 1}
    assert headers_match(args, {"k": 1, "x-tenant": "t1"})
    assert not headers_match(args, {"k": 1})
    assert not headers_match(args, {"k": 1, "x-tenant": "t2"})


def test_any_with_x_compares_x_keys() -> None:
    args = {"x-match": "any-with-x", "x-tenant": "t1", "k": 1}
    assert headers_match(args, {"x-tenant": "t1"})
    assert headers_match(args, {"k": 1})
    assert not headers_match(args, {"x-tenant": "t2", "k": 2})


def test_x_match_key_itself_never_compared() -> None:
    # A header literally named x-match must not count as an "any" hit.
    args = {"x-match": "any-with-x", "k": 1}
    assert not headers_match(args, {"x-match": "any-with-x"})
    assert headers_match({"x-match": "all-with-x"}, {"x-match": "other"})


def test_void_value_means_presence() -> None:
    args = {"x-match": "all", "trace": None, "k": 1}
    assert headers_match(args, {"trace": "anything", "k": 1})
    assert headers_match(args, {"trace": None, "k": 1})
    assert headers_match(args, {"trace": False, "k": 1})
    assert not headers_match(args, {"k": 1})
    assert headers_match({"x-match": "any", "trace": None}, {"trace": 0})
    assert not headers_match({"x-match": "any", "trace": None}, {"other": 0})


def test_non_void_binding_value_does_not_match_void_header() -> None:
    assert not headers_match({"k": 0}, {"k": None})
    assert not headers_match({"k": ""}, {"k": None})


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (True, 1),
        (1, True),
        (False, 0),
        (0, False),
        (1, "1"),
        ("1", 1),
        (1.0, "1.0"),
        (Decimal("1"), 1),
        (Decimal("1.0"), Decimal("1")),
        ({"a": 1}, {"a": True}),
        ([1, 2], [True, 2]),
        ([1, 2], [2, 1]),
        ({"a": 1}, {"a": 1, "b": 2}),
        ("a", ["a"]),
    ],
)
def test_typed_values_that_must_differ(expected: object, actual: object) -> None:
    assert not headers_match({"k": expected}, {"k": actual})
    assert not headers_match({"x-match": "any", "k": expected}, {"k": actual})


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        (True, True),
        (False, False),
        (7, 7),
        (1, 1.0),  # Erlang's == compares numbers by value
        ("pdf", "pdf"),
        ("pdf", b"pdf"),  # both are AMQP byte strings
        ("\u00e9t\u00e9", "\u00e9t\u00e9".encode()),
        (Decimal("1.50"), Decimal("1.50")),
        ({"a": 1, "b": [True, "x"]}, {"b": [True, b"x"], "a": 1}),
        ([1, {"n": None}], (1, {"n": None})),
        (
            datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
            datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
        ),
    ],
)
def test_typed_values_that_must_match(expected: object, actual: object) -> None:
    assert headers_match({"k": expected}, {"k": actual})


def test_invalid_x_match_routes_as_all() -> None:
    # RabbitMQ's parse_x_match falls back to all for legacy bindings.
    args = {"x-match": "bogus", "a": 1, "b": 2}
    assert headers_match(args, {"a": 1, "b": 2})
    assert not headers_match(args, {"a": 1})


def test_x_match_as_bytes() -> None:
    assert headers_match({"x-match": b"any", "a": 1, "b": 2}, {"a": 1})
    validate_x_match({"x-match": b"any-with-x"})


@pytest.mark.parametrize("mode", ["all", "any", "all-with-x", "any-with-x"])
def test_validate_accepts_every_mode(mode: str) -> None:
    assert validate_x_match({"x-match": mode, "k": 1}) is None


def test_validate_accepts_missing_x_match() -> None:
    assert validate_x_match({"k": 1}) is None
    assert validate_x_match({}) is None


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("foo", '<<"foo">>'),
        ("ALL", '<<"ALL">>'),
        ("", "<<>>"),
        ('a"b\\c', '<<"a\\"b\\\\c">>'),
        ("caf\u00e9", '<<"caf\u00e9"/utf8>>'),
        (b"\xff\x00", "<<255,0>>"),
    ],
)
def test_validate_rejects_unknown_mode_with_rabbitmq_text(value: object, rendered: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        validate_x_match({"x-match": value})
    assert info.value.text == (
        f"Invalid x-match field value {rendered}; expected all, any, all-with-x, or any-with-x"
    )
    assert info.value.reply_code == 406


def test_validate_rejects_non_string_mode() -> None:
    with pytest.raises(PreconditionFailed) as info:
        validate_x_match({"x-match": True})
    assert info.value.text == "Invalid x-match field type bool (value true); expected longstr"
    with pytest.raises(PreconditionFailed) as info:
        validate_x_match({"x-match": 5})
    assert info.value.text == "Invalid x-match field type long (value 5); expected longstr"
