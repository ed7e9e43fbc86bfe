// Emoji extraction, independent of the plugin ABI (unit-tested with `node --test`).
//
// The JavaScript engine inside componentize-js has no Unicode property escapes
// (`\p{...}` is a syntax error there), so emoji are recognised by code-point
// ranges from the Unicode emoji data (UTS #51):
//
// * a cluster starts at a pictograph, or is a pair of regional indicators (a flag);
// * it extends over skin tones (U+1F3FB–1F3FF), the emoji variation selector
//   (U+FE0F), the keycap mark (U+20E3), tag characters (U+E0020–E007F), and
//   zero-width-joiner (U+200D) sequences, so "👍🏽" and "👩‍💻" count once;
// * it counts as an emoji if it is drawn as one: a code point with default
//   emoji presentation, U+FE0F, a skin tone, a joiner, or a flag. A text-style
//   symbol such as "©" or "❤" alone does not count; "❤️" does.

const BMP_EMOJI_PRESENTATION = new Set([
  0x231a, 0x231b, 0x23e9, 0x23ea, 0x23eb, 0x23ec, 0x23f0, 0x23f3, 0x25fd, 0x25fe, 0x2614, 0x2615, 0x267f,
  0x2693, 0x26a1, 0x26aa, 0x26ab, 0x26bd, 0x26be, 0x26c4, 0x26c5, 0x26ce, 0x26d4, 0x26ea, 0x26f2, 0x26f3,
  0x26f5, 0x26fa, 0x26fd, 0x2705, 0x270a, 0x270b, 0x2728, 0x274c, 0x274e, 0x2753, 0x2754, 0x2755, 0x2757,
  0x2795, 0x2796, 0x2797, 0x27b0, 0x27bf, 0x2b1b, 0x2b1c, 0x2b50, 0x2b55,
]);

const isRegional = (cp) => cp >= 0x1f1e6 && cp <= 0x1f1ff;
const isModifier = (cp) => cp >= 0x1f3fb && cp <= 0x1f3ff;
const isTag = (cp) => cp >= 0xe0020 && cp <= 0xe007f;

function isPictograph(cp) {
  return (
    (cp >= 0x1f000 && cp <= 0x1faff && !isRegional(cp) && !isModifier(cp)) ||
    (cp >= 0x2600 && cp <= 0x27bf) ||
    (cp >= 0x2300 && cp <= 0x23ff) ||
    (cp >= 0x2b00 && cp <= 0x2bff) ||
    (cp >= 0x2190 && cp <= 0x21ff) ||
    (cp >= 0x25a0 && cp <= 0x25ff) ||
    [0x00a9, 0x00ae, 0x203c, 0x2049, 0x2122, 0x2139, 0x3030, 0x303d, 0x3297, 0x3299].includes(cp)
  );
}

function isPresentation(cp) {
  return (cp >= 0x1f000 && cp <= 0x1faff && !isModifier(cp)) || (cp >= 0x2648 && cp <= 0x2653) || BMP_EMOJI_PRESENTATION.has(cp);
}

// Any code unit that can start or be part of an emoji (surrogates included).
const MAYBE = /[\u00a9\u00ae\u203c\u2049\u2122\u2139\u2190-\u21ff\u2300-\u23ff\u25a0-\u27bf\u2b00-\u2bff\u3030\u303d\u3297\u3299\ud800-\udbff]/;

export function emojis(text) {
  // Fast path: most posts have none (the engine here interprets, so this matters).
  if (!MAYBE.test(text)) return [];
  const cps = Array.from(text, (c) => c.codePointAt(0));
  const out = [];
  let i = 0;
  while (i < cps.length) {
    const cp = cps[i];
    if (isRegional(cp) && i + 1 < cps.length && isRegional(cps[i + 1])) {
      out.push(String.fromCodePoint(cp, cps[i + 1]));
      i += 2;
      continue;
    }
    if (!isPictograph(cp)) {
      i += 1;
      continue;
    }
    let j = i + 1;
    let drawn = isPresentation(cp);
    for (;;) {
      const next = cps[j];
      if (next === 0xfe0f || next === 0x20e3 || (next !== undefined && (isModifier(next) || isTag(next)))) {
        drawn = drawn || next !== 0x20e3;
        j += 1;
      } else if (next === 0x200d && j + 1 < cps.length && isPictograph(cps[j + 1])) {
        drawn = true;
        j += 2;
      } else {
        break;
      }
    }
    if (drawn) out.push(String.fromCodePoint(...cps.slice(i, j)));
    i = j;
  }
  return out;
}

// Counts per emoji, most frequent first (ties: first appearance).
export function summarize(text, top) {
  const list = emojis(text);
  const counts = new Map();
  for (const e of list) counts.set(e, (counts.get(e) || 0) + 1);
  const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1]);
  return { emoji: ranked.slice(0, top).map(([e]) => e), emoji_count: list.length };
}

export function parseConfig(config) {
  const known = ["top", "drop_without_emoji"];
  for (const k of Object.keys(config)) {
    if (!known.includes(k)) throw new Error(`unknown config key \`${k}\` (known: ${known.join(", ")})`);
  }
  const top = config.top ?? 5;
  if (!Number.isInteger(top) || top < 1) throw new Error("config key `top` must be an integer >= 1");
  const drop = config.drop_without_emoji ?? false;
  if (typeof drop !== "boolean") throw new Error("config key `drop_without_emoji` must be true or false");
  return { top, dropWithoutEmoji: drop };
}
