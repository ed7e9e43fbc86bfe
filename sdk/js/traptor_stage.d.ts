// Types of traptor_stage.js (traptor's plugin ABI 0.2 for JavaScript and
// TypeScript stages). Copied into every TypeScript project
// `traptor-host plugin new` writes, beside the helper itself.

/** The parts of a post a stage reads (WIT `flags fields`). */
export interface Fields {
  raw: boolean;
  id: boolean;
  source: boolean;
  text: boolean;
  author: boolean;
  lang: boolean;
  createdAt: boolean;
  hashtags: boolean;
  mentions: boolean;
  urls: boolean;
  cashtags: boolean;
  coordinates: boolean;
  kinds: boolean;
  matchedRules: boolean;
}

export interface Span {
  start: number;
  len: number;
}
export interface Range {
  first: number;
  count: number;
}

/** A batch as the host sends it (read it through `processBatch`). */
export interface Batch {
  count: number;
  data: Uint8Array;
  posts: unknown[];
  strings: Span[];
  ruleRefs: Uint32Array | number[];
  rules: unknown[];
}

/** What `processBatch` returns to the host. */
export interface Results {
  data: Uint8Array;
  changes: { post: number; action: "enrich" | "drop" | "error"; text: Span }[];
}

/** A stage's answer for one post; `undefined` keeps it. */
export interface Outcome {
  action: "enrich" | "drop" | "error";
  text: string;
}

export function enrich(fields: Record<string, unknown>): Outcome;
export function drop(reason: string): Outcome;
export function error(message: string): Outcome;
/** The flags with every member false but those named (`{ text: true }`). */
export function fields(wanted?: Partial<Fields>): Fields;

export interface MatchedRule {
  id: string;
  tag: string | undefined;
  value: string;
  ruleType: string;
}

/** One post; reading a field the stage does not declare throws, naming it. */
export class Post {
  readonly raw: string;
  readonly id: string;
  readonly source: string;
  readonly text: string;
  readonly authorId: string | undefined;
  readonly authorHandle: string | undefined;
  readonly lang: string | undefined;
  readonly createdAt: string | undefined;
  readonly hashtags: string[];
  readonly mentions: string[];
  readonly urls: string[];
  readonly cashtags: string[];
  readonly coordinates: { lng: number; lat: number } | undefined;
  readonly isRetweet: boolean;
  readonly isReply: boolean;
  readonly isQuote: boolean;
  readonly matchedRules: MatchedRule[];
}

/** Call `one(post)` for each post of `batch`; the results the host expects. */
export function processBatch(batch: Batch, reads: Fields, one: (post: Post) => Outcome | undefined | null): Results;
