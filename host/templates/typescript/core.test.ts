// `node --test target/js` after the build (tsc compiles this file too).
import { test } from "node:test";
import assert from "node:assert/strict";
import { countWords, parseConfig } from "./core.js";

test("counts words", () => {
  assert.equal(countWords(" one two  three "), 3);
  assert.equal(countWords("a\u0085b\ufeffc"), 2);
});

test("config is checked", () => {
  assert.equal(parseConfig({ min_words: 2 }).minWords, 2);
  assert.throws(() => parseConfig({ min_word: 2 }), /`min_word`/);
});
