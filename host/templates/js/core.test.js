// `node --test` in this folder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { countWords, parseConfig } from "./core.js";

test("counts words", () => {
  assert.equal(countWords(" one two  three "), 3);
  // Unicode White_Space: U+0085 splits, U+FEFF does not.
  assert.equal(countWords("a\u0085b\ufeffc"), 2);
});

test("config is checked", () => {
  assert.equal(parseConfig({ min_words: 2 }).minWords, 2);
  assert.throws(() => parseConfig({ min_word: 2 }), /`min_word`/);
});
