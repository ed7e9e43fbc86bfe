"""`{{name}}`: a traptor stage ({{kind}}) in Python, made by `traptor-host plugin new`.

{{summary}} The logic is in `{{module}}_core.py` (tested with
`python3 -m unittest`); this file adapts it to the plugin ABI (WIT in `wit/`).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

import {{module}}_core as core

# componentize-py may build the export class more than once: configuration
# lives at module level.
_CONFIG = {"min_words": 3}


class Stage(exports.Stage):
    def describe(self) -> types.Description:
        return types.Description(
            name="{{name}}",
            version="0.1.0",
            kind=types.StageKind.{{kind_upper}},
            summary="{{summary}}",
            config_schema=json.dumps(core.SCHEMA),
            wants_raw=False,
        )

    def init(self, config: str) -> None:
        try:
            _CONFIG.update(core.parse_config(json.loads(config) if config.strip() else {}))
        except ValueError as e:
            raise Err(str(e))

    def process(self, batch):
        out = []
        for post in batch:
            try:
                words = core.count_words(post.text)
{{process_python}}
            except Exception as e:  # one bad post must not fail the batch
                out.append(types.Outcome_Error(f"{type(e).__name__}: {e}"))
        return out
