// The helper's walk over a batch, natively (`node --test sdk/js/`): the batch
// laid out as the host lays it out (one buffer, spans), the results read back.
import { test } from "node:test";
import assert from "node:assert/strict";
import { drop, enrich, fields, processBatch } from "./traptor_stage.js";

const enc = new TextEncoder();

function batchOf(texts) {
  let data = new Uint8Array(0);
  const posts = texts.map((t) => {
    const bytes = enc.encode(t);
    const start = data.length;
    const grown = new Uint8Array(start + bytes.length);
    grown.set(data);
    grown.set(bytes, start);
    data = grown;
    const none = { first: 0, count: 0 };
    const empty = { start: 0, len: 0 };
    return { raw: empty, id: empty, source: empty, text: { start, len: bytes.length }, hashtags: none,
      mentions: none, urls: none, cashtags: none, matchedRules: none, isRetweet: false, isReply: false, isQuote: false };
  });
  return { count: texts.length, data, posts, strings: [], ruleRefs: [], rules: [] };
}

const texts = (r) => r.changes.map((c) => [c.post, c.action, new TextDecoder().decode(r.data.subarray(c.text.start, c.text.start + c.text.len))]);

test("kept posts are not named; enrich, drop and a throw are, each in its own span", () => {
  const reads = fields({ text: true });
  const r = processBatch(batchOf(["héllo wörld", "keep me", "drop me", "boom"]), reads, (post) => {
    if (post.text.startsWith("keep")) return undefined;
    if (post.text.startsWith("drop")) return drop("asked");
    if (post.text === "boom") throw new Error("bad post");
    return enrich({ words: post.text.split(" ").length, first: post.text.split(" ")[0] });
  });
  assert.deepEqual(texts(r), [
    [0, "enrich", '{"words":2,"first":"héllo"}'],
    [2, "drop", "asked"],
    [3, "error", "Error: bad post"],
  ]);
});

test("reading an undeclared field fails that post, naming the field", () => {
  const r = processBatch(batchOf(["x", "y"]), fields({ text: true }), (post) => (post.lang ? undefined : undefined));
  assert.equal(r.changes.length, 2);
  assert.match(texts(r)[0][2], /read `lang` but does not declare it/);
});

test("a stage that reads nothing still answers for every post", () => {
  const b = { count: 3, data: new Uint8Array(0), posts: [], strings: [], ruleRefs: [], rules: [] };
  let seen = 0;
  const r = processBatch(b, fields({}), () => { seen++; });
  assert.equal(seen, 3);
  assert.deepEqual(r.changes, []);
});
