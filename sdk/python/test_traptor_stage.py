"""The helper's walk over a batch, natively (`python3 -m unittest` in
sdk/python): the componentize-py bindings it imports are stood in for by the
same shapes (records, flags, the action enum), the batch laid out as the host
lays it out (one buffer, spans), the results read back."""

import enum
import sys
import types as pytypes
import unittest
from dataclasses import dataclass


class Fields(enum.Flag):
    RAW = enum.auto()
    ID = enum.auto()
    SOURCE = enum.auto()
    TEXT = enum.auto()
    AUTHOR = enum.auto()
    LANG = enum.auto()
    CREATED_AT = enum.auto()
    HASHTAGS = enum.auto()
    MENTIONS = enum.auto()
    URLS = enum.auto()
    CASHTAGS = enum.auto()
    COORDINATES = enum.auto()
    KINDS = enum.auto()
    MATCHED_RULES = enum.auto()


class Action(enum.Enum):
    ENRICH = 0
    DROP = 1
    ERROR = 2


@dataclass
class Span:
    start: int
    len: int


@dataclass
class Range:
    first: int
    count: int


@dataclass
class Change:
    post: int
    action: Action
    text: Span


@dataclass
class Results:
    data: bytes
    changes: list


@dataclass
class Post:
    text: Span
    lang: object
    hashtags: Range


@dataclass
class Batch:
    count: int
    data: bytes
    posts: list
    strings: list
    rule_refs: list
    rules: list


stub = pytypes.SimpleNamespace(Fields=Fields, Action=Action, Span=Span, Change=Change, Results=Results)
sys.modules["wit_world"] = pytypes.ModuleType("wit_world")
sys.modules["wit_world.imports"] = pytypes.ModuleType("wit_world.imports")
sys.modules["wit_world.imports"].types = stub

import traptor_stage  # noqa: E402  (after the stand-in bindings)


def batch_of(posts):
    """posts: [(text, [hashtags])]"""
    data = bytearray()
    records, strings = [], []

    def span(s):
        b = s.encode()
        data.extend(b)
        return Span(len(data) - len(b), len(b))

    for text, tags in posts:
        t = span(text)
        first = len(strings)
        strings.extend(span(h) for h in tags)
        records.append(Post(t, None, Range(first, len(tags))))
    return Batch(len(posts), bytes(data), records, strings, [], [])


def texts(r):
    return [(c.post, c.action.name, r.data[c.text.start : c.text.start + c.text.len].decode()) for c in r.changes]


class Walk(unittest.TestCase):
    def test_kept_posts_are_not_named_and_each_change_has_its_span(self):
        def one(post):
            if post.text.startswith("keep"):
                return None
            if post.text.startswith("drop"):
                return traptor_stage.Drop("asked")
            if post.text == "boom":
                raise ValueError("bad post")
            return traptor_stage.Enrich({"tags": post.hashtags, "first": post.text.split()[0]})

        b = batch_of([("héllo #a #b", ["a", "b"]), ("keep me", []), ("drop me", []), ("boom", [])])
        r = traptor_stage.process(b, one, Fields.TEXT | Fields.HASHTAGS)
        self.assertEqual(
            texts(r),
            [(0, "ENRICH", '{"tags":["a","b"],"first":"héllo"}'), (2, "DROP", "asked"), (3, "ERROR", "ValueError: bad post")],
        )

    def test_an_undeclared_field_fails_that_post_naming_it(self):
        r = traptor_stage.process(batch_of([("x", [])]), lambda p: p.lang, Fields.TEXT)
        self.assertEqual(len(r.changes), 1)
        self.assertIn("read `lang` but does not declare it", texts(r)[0][2])

    def test_a_stage_that_reads_nothing_still_answers_for_every_post(self):
        seen = []
        b = Batch(3, b"", [], [], [], [])
        r = traptor_stage.process(b, lambda p: seen.append(1), Fields(0))
        self.assertEqual((len(seen), r.changes), (3, []))


if __name__ == "__main__":
    unittest.main()
