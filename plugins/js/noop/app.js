// `noop`: a JavaScript stage that keeps every post and reads nothing. Its cost
// is the boundary's (and the engine's) alone: scripts/bench-stages.sh measures
// it beside the Rust and Python no-ops.
import { fields, processBatch } from "./traptor_stage.js";

const READS = fields({});

export const stage = {
  describe() {
    return {
      name: "noop",
      version: "0.2.0",
      kind: "enricher",
      summary: "Keeps every post; reads nothing (a benchmark of the boundary)",
      configSchema: JSON.stringify({ type: "object", additionalProperties: false }),
      reads: READS,
    };
  },

  init(_json) {
    return READS;
  },

  process(batch) {
    return processBatch(batch, READS, () => undefined);
  },
};
