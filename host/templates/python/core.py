"""The logic of `{{name}}`, without the ABI: plain Python, unit-tested."""

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"min_words": {"type": "integer", "minimum": 0, "default": 3}},
}


def parse_config(config):
    """The checked configuration; ValueError names the key at fault."""
    if not isinstance(config, dict):
        raise ValueError("configuration must be a table")
    for key in config:
        if key not in SCHEMA["properties"]:
            raise ValueError(f"unknown config key `{key}` (known: min_words)")
    n = config.get("min_words", 3)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError("config key `min_words` must be a whole number >= 0")
    return {"min_words": n}


def count_words(text):
    return len(text.split())
