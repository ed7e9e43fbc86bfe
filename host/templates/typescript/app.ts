// `{{name}}`: a traptor stage ({{kind}}) in TypeScript, made by `traptor-host plugin new`.
//
// {{summary}} The logic is in core.ts (tested with `node --test` on the
// compiled JavaScript); this file adapts it to the plugin ABI (WIT in wit/,
// read through traptor_stage.js, typed by traptor_stage.d.ts).
import { log } from "traptor:plugin/host@{{abi}}";
import { SCHEMA, parseConfig, countWords, type Config } from "./core.js";
import { drop, enrich, fields, processBatch, type Batch, type Outcome, type Post } from "./traptor_stage.js";

let config: Config = { minWords: 3 };

// The host sends only the fields a stage reads; reading another one throws.
const READS = fields({ text: true });

// The outcome of one post: undefined keeps it; enrich({...}), drop(reason).
function one(post: Post): Outcome | undefined {
  const words = countWords(post.text);
{{process_js}}
}

export const stage = {
  describe() {
    return {
      name: "{{name}}",
      version: "0.1.0",
      kind: "{{kind}}",
      summary: "{{summary}}",
      configSchema: JSON.stringify(SCHEMA),
      reads: READS,
    };
  },

  init(json: string) {
    // Throwing refuses the configuration with this message.
    config = parseConfig(json.trim() ? JSON.parse(json) : {});
    log("debug", "configured", [["min_words", String(config.minWords)]]);
    return READS;
  },

  process(batch: Batch) {
    return processBatch(batch, READS, one);
  },
};
