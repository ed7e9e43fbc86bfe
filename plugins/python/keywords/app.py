"""`keywords`: a traptor stage in Python (componentize-py).

Adds `keywords` (the most frequent meaningful words of the post) and
`word_count` under `traptor.enrichments.<stage>`. See README.md.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

import keywords_core

# One instance per component instance; componentize-py may build the export
# class more than once, so the configuration lives at module level.
_CONFIG = {"top": 5, "min_length": 3, "stopwords": keywords_core.DEFAULT_STOPWORDS}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "top": {"type": "integer", "minimum": 1, "default": 5},
        "min_length": {"type": "integer", "minimum": 1, "default": 3},
        "extra_stopwords": {"type": "array", "items": {"type": "string"}},
    },
}


class Stage(exports.Stage):
    def describe(self) -> types.Description:
        return types.Description(
            name="keywords",
            version="0.1.0",
            kind=types.StageKind.ENRICHER,
            summary="Adds the most frequent meaningful words of each post (Python)",
            config_schema=json.dumps(SCHEMA),
            wants_raw=False,
        )

    def init(self, config: str) -> None:
        try:
            parsed = json.loads(config) if config.strip() else {}
            if not isinstance(parsed, dict):
                raise ValueError("configuration must be a table")
            top, min_length, stopwords = keywords_core.parse_config(parsed)
        except ValueError as e:
            raise Err(str(e))
        _CONFIG.update(top=top, min_length=min_length, stopwords=stopwords)
        host.log(host.Level.DEBUG, "configured", [("top", str(top))])

    def process(self, batch):
        out = []
        for post in batch:
            try:
                words = keywords_core.keywords(
                    post.text, _CONFIG["top"], _CONFIG["min_length"], _CONFIG["stopwords"]
                )
                out.append(
                    types.Outcome_Enrich(
                        [
                            types.Field("keywords", json.dumps(words, ensure_ascii=False)),
                            types.Field("word_count", str(len(post.text.split()))),
                        ]
                    )
                )
            except Exception as e:  # one bad post must not fail the batch
                out.append(types.Outcome_Error(f"{type(e).__name__}: {e}"))
        return out
