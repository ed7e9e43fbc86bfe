"""`keywords`: a traptor stage in Python (componentize-py).

Adds `keywords` (the most frequent meaningful words of the post) and
`word_count` under `traptor.enrichments.<stage>`. See README.md.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

import keywords_core
from traptor_stage import Enrich, process

# One instance per component instance; componentize-py may build the export
# class more than once, so the configuration lives at module level.
_CONFIG = {"top": 5, "min_length": 3, "stopwords": keywords_core.DEFAULT_STOPWORDS}

# The host sends only the fields a stage reads.
READS = types.Fields.TEXT

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "top": {"type": "integer", "minimum": 1, "default": 5},
        "min_length": {"type": "integer", "minimum": 1, "default": 3},
        "extra_stopwords": {"type": "array", "items": {"type": "string"}},
    },
}


def one(post):
    text = post.text
    words = keywords_core.keywords(text, _CONFIG["top"], _CONFIG["min_length"], _CONFIG["stopwords"])
    return Enrich({"keywords": words, "word_count": len(text.split())})


class Stage(exports.Stage):
    def describe(self) -> types.Description:
        return types.Description(
            name="keywords",
            version="0.2.0",
            kind=types.StageKind.ENRICHER,
            summary="Adds the most frequent meaningful words of each post (Python)",
            config_schema=json.dumps(SCHEMA),
            reads=READS,
        )

    def init(self, config: str) -> types.Fields:
        try:
            parsed = json.loads(config) if config.strip() else {}
            if not isinstance(parsed, dict):
                raise ValueError("configuration must be a table")
            top, min_length, stopwords = keywords_core.parse_config(parsed)
        except ValueError as e:
            raise Err(str(e))
        _CONFIG.update(top=top, min_length=min_length, stopwords=stopwords)
        host.log(host.Level.DEBUG, "configured", [("top", str(top))])
        return READS

    def process(self, batch: types.Batch) -> types.Results:
        return process(batch, one, READS)
