// `{{name}}`: a traptor stage ({{kind}}) in JavaScript, made by `traptor-host plugin new`.
//
// {{summary}} The logic is in core.js (tested with `node --test`); this file
// adapts it to the plugin ABI (WIT in wit/).
import { log } from "traptor:plugin/host@{{abi}}";
import { SCHEMA, parseConfig, countWords } from "./core.js";

let config = { minWords: 3 };

export const stage = {
  describe() {
    return {
      name: "{{name}}",
      version: "0.1.0",
      kind: "{{kind}}",
      summary: "{{summary}}",
      configSchema: JSON.stringify(SCHEMA),
      wantsRaw: false,
    };
  },

  init(json) {
    // Throwing refuses the configuration with this message.
    config = parseConfig(json.trim() ? JSON.parse(json) : {});
    log("debug", "configured", [["min_words", String(config.minWords)]]);
  },

  process(batch) {
    return batch.map((post) => {
      try {
        const words = countWords(post.text);
{{process_js}}
      } catch (e) {
        return { tag: "error", val: String(e) };
      }
    });
  },
};
