// `node --test` in this folder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { emojis, summarize, parseConfig } from "./emoji_core.js";

test("clusters count once", () => {
  assert.deepEqual(emojis("ok 👍🏽 then 👩‍💻 and 🇫🇷!"), ["👍🏽", "👩‍💻", "🇫🇷"]);
});

test("ranks by frequency", () => {
  assert.deepEqual(summarize("🔥 great 🎉🔥 wow 🔥", 2), { emoji: ["🔥", "🎉"], emoji_count: 4 });
});

test("plain text and text-style symbols have none", () => {
  assert.deepEqual(summarize("no emoji here, just text #1 © ™", 5), { emoji: [], emoji_count: 0 });
  assert.deepEqual(emojis("love ❤️ but not ❤"), ["❤️"]);
});

test("config is checked", () => {
  assert.equal(parseConfig({ top: 2 }).top, 2);
  assert.throws(() => parseConfig({ topp: 2 }), /`topp`/);
  assert.throws(() => parseConfig({ top: 0 }), /`top`/);
});
