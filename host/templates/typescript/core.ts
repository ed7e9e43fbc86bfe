// The logic of `{{name}}`, without the ABI: plain TypeScript, unit-tested.
export const SCHEMA = {
  type: "object",
  additionalProperties: false,
  properties: { min_words: { type: "integer", minimum: 0, default: 3 } },
};

export interface Config {
  minWords: number;
}

export function parseConfig(c: unknown): Config {
  if (typeof c !== "object" || c === null || Array.isArray(c)) throw new Error("configuration must be a table");
  for (const k of Object.keys(c)) {
    if (!(k in SCHEMA.properties)) throw new Error(`unknown config key \`${k}\` (known: min_words)`);
  }
  const n = (c as { min_words?: unknown }).min_words ?? 3;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
    throw new Error("config key `min_words` must be a whole number >= 0");
  }
  return { minWords: n };
}

// Unicode White_Space (what every traptor SDK splits words on; JavaScript's
// \s differs: it has U+FEFF and lacks U+0085).
const SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

export function countWords(text: string): number {
  return text.split(SPACE).filter((w) => w.length > 0).length;
}
