// `emoji`: a traptor stage in JavaScript (componentize-js).
//
// Adds `emoji` (the most used emoji of the post) and `emoji_count`; with
// `drop_without_emoji = true` it is a filter that keeps only posts with emoji.
import { log, counter } from "traptor:plugin/host@0.1.0";
import { parseConfig, summarize } from "./emoji_core.js";

let config = { top: 5, dropWithoutEmoji: false };

const SCHEMA = {
  type: "object",
  additionalProperties: false,
  properties: {
    top: { type: "integer", minimum: 1, default: 5 },
    drop_without_emoji: { type: "boolean", default: false },
  },
};

export const stage = {
  describe() {
    return {
      name: "emoji",
      version: "0.1.0",
      kind: "enricher",
      summary: "Adds the emoji used in each post (JavaScript)",
      configSchema: JSON.stringify(SCHEMA),
      wantsRaw: false,
    };
  },

  init(json) {
    // Throwing rejects the configuration with this message.
    config = parseConfig(json.trim() ? JSON.parse(json) : {});
    log("debug", "configured", [["top", String(config.top)]]);
  },

  process(batch) {
    return batch.map((post) => {
      try {
        const s = summarize(post.text, config.top);
        if (s.emoji_count === 0 && config.dropWithoutEmoji) {
          counter("dropped_without_emoji", 1n);
          return { tag: "drop", val: "no emoji" };
        }
        return {
          tag: "enrich",
          val: [
            { name: "emoji", value: JSON.stringify(s.emoji) },
            { name: "emoji_count", value: String(s.emoji_count) },
          ],
        };
      } catch (e) {
        return { tag: "error", val: String(e) };
      }
    });
  },
};
