"""`noop`: a Python stage that keeps every post and reads nothing. Its cost is
the boundary's (and the interpreter's) alone: scripts/bench-stages.sh measures
it beside the Rust and JavaScript no-ops.
"""

from wit_world import exports
from wit_world.imports import types

from traptor_stage import process

READS = types.Fields(0)


def one(post):
    return None


class Stage(exports.Stage):
    def describe(self) -> types.Description:
        return types.Description(
            name="noop",
            version="0.2.0",
            kind=types.StageKind.ENRICHER,
            summary="Keeps every post; reads nothing (a benchmark of the boundary)",
            config_schema='{"type": "object", "additionalProperties": false}',
            reads=READS,
        )

    def init(self, config: str) -> types.Fields:
        return READS

    def process(self, batch: types.Batch) -> types.Results:
        return process(batch, one, READS)
