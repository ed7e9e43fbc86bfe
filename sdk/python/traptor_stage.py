"""traptor's plugin ABI 0.2 for Python stages (componentize-py): read a batch's
posts lazily and return the changes, without knowing the layout.

A batch arrives as one buffer of UTF-8 bytes with records of offsets, holding
only the fields the stage declared in `Description.reads`. `process` walks
it, calls your function once per post with a `Post` whose attributes decode
on first use, and builds the results: return `None` to keep a post (the
cheapest answer), `Enrich({...})`, `Drop("reason")` or `Error("message")`.
An exception in your function becomes an `Error` for that post only.

    from traptor_stage import Enrich, process

    def one(post):
        return Enrich({"words": len(post.text.split())})

    class Stage(exports.Stage):
        def process(self, batch):
            return process(batch, one)

This file is copied into every Python project `traptor-host plugin new`
writes; it is the same for every stage.
"""

import json

from wit_world.imports import types


class Enrich:
    """Keep the post and add these fields under traptor.enrichments.<stage>."""

    __slots__ = ("fields",)

    def __init__(self, fields):
        self.fields = fields


class Drop:
    """Remove the post from the stream, for this reason (counted, logged)."""

    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason


class Error:
    """The post could not be processed; the stage's on_error decides."""

    __slots__ = ("message",)

    def __init__(self, message):
        self.message = message


class Undeclared(AttributeError):
    pass


def _text(data, span):
    return data[span.start : span.start + span.len].decode("utf-8")


class Post:
    """One post; each attribute is decoded from the batch when first read."""

    __slots__ = ("_b", "_p", "_reads")

    def __init__(self, batch, record, reads):
        self._b = batch
        self._p = record
        self._reads = reads

    def _need(self, flag, name):
        if self._p is None or not (self._reads & flag):
            raise Undeclared(f"the stage read `{name}` but does not declare it: add Fields.{flag.name} to its reads")

    def _strings(self, r):
        b = self._b
        return [_text(b.data, s) for s in b.strings[r.first : r.first + r.count]]

    @property
    def raw(self):
        self._need(types.Fields.RAW, "raw")
        return _text(self._b.data, self._p.raw)

    @property
    def id(self):
        self._need(types.Fields.ID, "id")
        return _text(self._b.data, self._p.id)

    @property
    def source(self):
        self._need(types.Fields.SOURCE, "source")
        return _text(self._b.data, self._p.source)

    @property
    def text(self):
        self._need(types.Fields.TEXT, "text")
        return _text(self._b.data, self._p.text)

    @property
    def author_id(self):
        self._need(types.Fields.AUTHOR, "author_id")
        s = self._p.author_id
        return None if s is None else _text(self._b.data, s)

    @property
    def author_handle(self):
        self._need(types.Fields.AUTHOR, "author_handle")
        s = self._p.author_handle
        return None if s is None else _text(self._b.data, s)

    @property
    def lang(self):
        self._need(types.Fields.LANG, "lang")
        s = self._p.lang
        return None if s is None else _text(self._b.data, s)

    @property
    def created_at(self):
        self._need(types.Fields.CREATED_AT, "created_at")
        s = self._p.created_at
        return None if s is None else _text(self._b.data, s)

    @property
    def hashtags(self):
        self._need(types.Fields.HASHTAGS, "hashtags")
        return self._strings(self._p.hashtags)

    @property
    def mentions(self):
        self._need(types.Fields.MENTIONS, "mentions")
        return self._strings(self._p.mentions)

    @property
    def urls(self):
        self._need(types.Fields.URLS, "urls")
        return self._strings(self._p.urls)

    @property
    def cashtags(self):
        self._need(types.Fields.CASHTAGS, "cashtags")
        return self._strings(self._p.cashtags)

    @property
    def coordinates(self):
        self._need(types.Fields.COORDINATES, "coordinates")
        c = self._p.coordinates
        return None if c is None else (c.lng, c.lat)

    @property
    def is_retweet(self):
        self._need(types.Fields.KINDS, "is_retweet")
        return self._p.is_retweet

    @property
    def is_reply(self):
        self._need(types.Fields.KINDS, "is_reply")
        return self._p.is_reply

    @property
    def is_quote(self):
        self._need(types.Fields.KINDS, "is_quote")
        return self._p.is_quote

    @property
    def matched_rules(self):
        """[(id, tag or None, value, rule_type), ...]"""
        self._need(types.Fields.MATCHED_RULES, "matched_rules")
        b, r = self._b, self._p.matched_rules
        out = []
        for i in b.rule_refs[r.first : r.first + r.count]:
            m = b.rules[i]
            tag = None if m.tag is None else _text(b.data, m.tag)
            out.append((_text(b.data, m.id), tag, _text(b.data, m.value), _text(b.data, m.rule_type)))
        return out


def process(batch, one, reads):
    """Call `one(post)` for each post of `batch` (the stage reads `reads`);
    the results the host expects."""
    data = bytearray()
    changes = []
    records = batch.posts
    for i in range(batch.count):
        try:
            out = one(Post(batch, records[i] if records else None, reads))
        except Exception as e:  # one bad post must not fail the batch
            out = Error(f"{type(e).__name__}: {e}")
        if out is None:
            continue
        if isinstance(out, Enrich):
            action, text = types.Action.ENRICH, json.dumps(out.fields, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(out, Drop):
            action, text = types.Action.DROP, str(out.reason)
        elif isinstance(out, Error):
            action, text = types.Action.ERROR, str(out.message)
        else:
            action, text = types.Action.ERROR, f"the stage returned {type(out).__name__}, not None/Enrich/Drop/Error"
        raw = text.encode("utf-8")
        changes.append(types.Change(i, action, types.Span(len(data), len(raw))))
        data += raw
    return types.Results(bytes(data), changes)
