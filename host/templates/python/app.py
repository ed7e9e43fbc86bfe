"""`{{name}}`: a traptor stage ({{kind}}) in Python, made by `traptor-host plugin new`.

{{summary}} The logic is in `{{module}}_core.py` (tested with
`python3 -m unittest`); this file adapts it to the plugin ABI (WIT in `wit/`,
read through `traptor_stage.py`).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

import {{module}}_core as core
from traptor_stage import Drop, Enrich, process

# componentize-py may build the export class more than once: configuration
# lives at module level.
_CONFIG = {"min_words": 3}

# The host sends only the fields a stage reads; reading another one raises.
READS = types.Fields.TEXT


def one(post):
    """The outcome of one post: None keeps it; Enrich({...}), Drop(reason)."""
    words = core.count_words(post.text)
{{process_python}}


class Stage(exports.Stage):
    def describe(self) -> types.Description:
        return types.Description(
            name="{{name}}",
            version="0.1.0",
            kind=types.StageKind.{{kind_upper}},
            summary="{{summary}}",
            config_schema=json.dumps(core.SCHEMA),
            reads=READS,
        )

    def init(self, config: str) -> types.Fields:
        try:
            _CONFIG.update(core.parse_config(json.loads(config) if config.strip() else {}))
        except ValueError as e:
            raise Err(str(e))
        return READS

    def process(self, batch: types.Batch) -> types.Results:
        return process(batch, one, READS)
