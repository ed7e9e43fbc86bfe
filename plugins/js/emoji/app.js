// `emoji`: a traptor stage in JavaScript (componentize-js).
//
// Adds `emoji` (the most used emoji of the post) and `emoji_count`; with
// `drop_without_emoji = true` it is a filter that keeps only posts with emoji.
import { log, counter } from "traptor:plugin/host@0.2.0";
import { parseConfig, summarize } from "./emoji_core.js";
import { drop, enrich, fields, processBatch } from "./traptor_stage.js";

let config = { top: 5, dropWithoutEmoji: false };

// The host sends only the fields a stage reads.
const READS = fields({ text: true });

const SCHEMA = {
  type: "object",
  additionalProperties: false,
  properties: {
    top: { type: "integer", minimum: 1, default: 5 },
    drop_without_emoji: { type: "boolean", default: false },
  },
};

function one(post) {
  const s = summarize(post.text, config.top);
  if (s.emoji_count === 0 && config.dropWithoutEmoji) {
    counter("dropped_without_emoji", 1n);
    return drop("no emoji");
  }
  return enrich({ emoji: s.emoji, emoji_count: s.emoji_count });
}

export const stage = {
  describe() {
    return {
      name: "emoji",
      version: "0.2.0",
      kind: "enricher",
      summary: "Adds the emoji used in each post (JavaScript)",
      configSchema: JSON.stringify(SCHEMA),
      reads: READS,
    };
  },

  init(json) {
    // Throwing rejects the configuration with this message.
    config = parseConfig(json.trim() ? JSON.parse(json) : {});
    log("debug", "configured", [["top", String(config.top)]]);
    return READS;
  },

  process(batch) {
    return processBatch(batch, READS, one);
  },
};
