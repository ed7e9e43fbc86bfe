"""The logic of `{{name}}`, without the ABI: plain Python, unit-tested."""

import re

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


# Unicode White_Space, what every traptor SDK splits words on (Python's
# str.split() also splits on U+001C..U+001F).
_SPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def count_words(text):
    return sum(1 for w in _SPACE.split(text) if w)
