// `noop`: a JavaScript stage that keeps every post and reads nothing. Its cost
// is the boundary's (and the engine's) alone: scripts/bench-stages.sh measures
// it beside the Rust and Python no-ops.
//
// `walk = true` (default) calls a function per post through traptor_stage.js,
// as every stage does; `walk = false` answers the batch at once (nothing
// changed), which leaves the call itself.
import { fields, processBatch } from "./traptor_stage.js";

const READS = fields({});
let walk = true;

export const stage = {
  describe() {
    return {
      name: "noop",
      version: "0.2.0",
      kind: "enricher",
      summary: "Keeps every post; reads nothing (a benchmark of the boundary)",
      configSchema: JSON.stringify({
        type: "object",
        additionalProperties: false,
        properties: { walk: { type: "boolean", default: true } },
      }),
      reads: READS,
    };
  },

  init(json) {
    const c = json.trim() ? JSON.parse(json) : {};
    const keys = Object.keys(c).filter((k) => k !== "walk");
    if (keys.length > 0 || (c.walk !== undefined && typeof c.walk !== "boolean")) {
      throw new Error("the only config key is `walk` (true or false)");
    }
    walk = c.walk ?? true;
    return READS;
  },

  process(batch) {
    if (!walk) return { data: new Uint8Array(0), changes: [] };
    return processBatch(batch, READS, () => undefined);
  },
};
