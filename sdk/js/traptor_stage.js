// traptor's plugin ABI 0.2 for JavaScript stages (componentize-js): read a
// batch's posts lazily and return the changes, without knowing the layout.
//
// A batch arrives as one buffer of UTF-8 bytes with records of offsets,
// holding only the fields the stage declared in its description's `reads`.
// `processBatch` walks it, calls your function once per post with a `Post`
// whose getters decode on first use, and builds the results: return
// `undefined` to keep a post (the cheapest answer), `enrich({...})`,
// `drop("reason")` or `error("message")`. An exception thrown for one post
// becomes an error for that post only.
//
//   import { enrich, processBatch } from "./traptor_stage.js";
//   const READS = { text: true };
//   process(batch) { return processBatch(batch, READS, (post) => enrich({ words: post.text.split(/\s+/).length })); }
//
// This file is copied into every JavaScript project `traptor-host plugin new`
// writes; it is the same for every stage.

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export const enrich = (fields) => ({ action: "enrich", text: JSON.stringify(fields) });
export const drop = (reason) => ({ action: "drop", text: String(reason) });
export const error = (message) => ({ action: "error", text: String(message) });

/** The `fields` flags with every member false but those named (`{ text: true }`). */
export function fields(wanted = {}) {
  const all = ["raw", "id", "source", "text", "author", "lang", "createdAt", "hashtags", "mentions", "urls",
    "cashtags", "coordinates", "kinds", "matchedRules"];
  return Object.fromEntries(all.map((k) => [k, Boolean(wanted[k])]));
}

const str = (b, s) => decoder.decode(b.data.subarray(s.start, s.start + s.len));
const opt = (b, s) => (s === undefined || s === null ? undefined : str(b, s));

export class Post {
  constructor(batch, record, reads) {
    this.b = batch;
    this.p = record;
    this.reads = reads;
  }
  need(flag, name) {
    if (!this.p || !this.reads[flag]) {
      throw new Error(`the stage read \`${name}\` but does not declare it: add ${flag} to its reads`);
    }
  }
  list(r) {
    const b = this.b;
    return b.strings.slice(r.first, r.first + r.count).map((s) => str(b, s));
  }
  get raw() { this.need("raw", "raw"); return str(this.b, this.p.raw); }
  get id() { this.need("id", "id"); return str(this.b, this.p.id); }
  get source() { this.need("source", "source"); return str(this.b, this.p.source); }
  get text() { this.need("text", "text"); return str(this.b, this.p.text); }
  get authorId() { this.need("author", "authorId"); return opt(this.b, this.p.authorId); }
  get authorHandle() { this.need("author", "authorHandle"); return opt(this.b, this.p.authorHandle); }
  get lang() { this.need("lang", "lang"); return opt(this.b, this.p.lang); }
  get createdAt() { this.need("createdAt", "createdAt"); return opt(this.b, this.p.createdAt); }
  get hashtags() { this.need("hashtags", "hashtags"); return this.list(this.p.hashtags); }
  get mentions() { this.need("mentions", "mentions"); return this.list(this.p.mentions); }
  get urls() { this.need("urls", "urls"); return this.list(this.p.urls); }
  get cashtags() { this.need("cashtags", "cashtags"); return this.list(this.p.cashtags); }
  get coordinates() { this.need("coordinates", "coordinates"); return this.p.coordinates ?? undefined; }
  get isRetweet() { this.need("kinds", "isRetweet"); return this.p.isRetweet; }
  get isReply() { this.need("kinds", "isReply"); return this.p.isReply; }
  get isQuote() { this.need("kinds", "isQuote"); return this.p.isQuote; }
  /** [{ id, tag, value, ruleType }, ...] */
  get matchedRules() {
    this.need("matchedRules", "matchedRules");
    const b = this.b;
    const r = this.p.matchedRules;
    return b.ruleRefs.slice(r.first, r.first + r.count).map((i) => {
      const m = b.rules[i];
      return { id: str(b, m.id), tag: opt(b, m.tag), value: str(b, m.value), ruleType: str(b, m.ruleType) };
    });
  }
}

/** Call `one(post)` for each post of `batch`; the results the host expects. */
export function processBatch(batch, reads, one) {
  const parts = [];
  const changes = [];
  let at = 0;
  const add = (i, out) => {
    const bytes = encoder.encode(out.text);
    changes.push({ post: i, action: out.action, text: { start: at, len: bytes.length } });
    parts.push(bytes);
    at += bytes.length;
  };
  const n = batch.count;
  const records = batch.posts;
  const proto = Post.prototype;
  let i = 0;
  // The try is outside the loop and each post an object literal: the engine
  // has no JIT, and together they cut the cost of a post by a quarter
  // (1.15 -> 0.82 µs of guest time, bench-stages.sh noop-js).
  while (i < n) {
    try {
      for (; i < n; i++) {
        const out = one({ __proto__: proto, b: batch, p: records[i], reads });
        if (out === undefined || out === null) continue;
        if (out.action === "enrich" || out.action === "drop" || out.action === "error") {
          add(i, out);
        } else {
          add(i, error("the stage returned something other than undefined, enrich(), drop() or error()"));
        }
      }
    } catch (e) {
      add(i, error(String(e)));
      i++;
    }
  }
  const data = new Uint8Array(at);
  let o = 0;
  for (const p of parts) {
    data.set(p, o);
    o += p.length;
  }
  return { data, changes };
}
