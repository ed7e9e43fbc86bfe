"""`noop`: a Python stage that keeps every post and reads nothing. Its cost is
the boundary's (and the interpreter's) alone: scripts/bench-stages.sh measures
it beside the Rust and JavaScript no-ops.

`walk = true` (default) calls a function per post through traptor_stage.py,
as every stage does; `walk = false` answers the batch at once (nothing
changed), which leaves the call itself.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

from traptor_stage import process

READS = types.Fields(0)
_WALK = [True]


def one(post):
    return None


class Stage(exports.Stage):
    def describe(self) -> types.Description:
        return types.Description(
            name="noop",
            version="0.2.0",
            kind=types.StageKind.ENRICHER,
            summary="Keeps every post; reads nothing (a benchmark of the boundary)",
            config_schema=json.dumps(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"walk": {"type": "boolean", "default": True}},
                }
            ),
            reads=READS,
        )

    def init(self, config: str) -> types.Fields:
        parsed = json.loads(config) if config.strip() else {}
        if not isinstance(parsed, dict) or set(parsed) - {"walk"} or not isinstance(parsed.get("walk", True), bool):
            raise Err("the only config key is `walk` (true or false)")
        _WALK[0] = parsed.get("walk", True)
        return READS

    def process(self, batch: types.Batch) -> types.Results:
        if not _WALK[0]:
            return types.Results(b"", [])
        return process(batch, one, READS)
