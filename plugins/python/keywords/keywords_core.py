"""Keyword extraction, independent of the plugin ABI (unit-tested with plain Python).

A keyword is a word of at least `min_length` letters that is not a stop word,
a number, a @mention, a #hashtag or a link. Keywords are ranked by frequency,
ties broken by first appearance.
"""

import re

DEFAULT_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can can't cannot could did do does doing don't down during each few for from further
    had has have having he her here hers herself him himself his how i i'm if in into is it it's its itself
    just let's me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own rt same she should so some such than that that's the their theirs them themselves then there these
    they this those through to too under until up very via was we we're were what when where which while who
    whom why will with would you your yours yourself yourselves""".split()
)

# Letters first, then letters, digits, apostrophes or inner hyphens.
_WORD = re.compile(r"[^\W\d_](?:[\w'’-]*[^\W_])?", re.UNICODE)
_NOT_WORDS = re.compile(r"(?:https?://\S+|www\.\S+|[@#＠＃$]\w+)", re.UNICODE)


def keywords(text, top=5, min_length=3, stopwords=DEFAULT_STOPWORDS):
    """The `top` most frequent keywords of `text`, lower-cased."""
    cleaned = _NOT_WORDS.sub(" ", text)
    counts = {}
    order = {}
    for i, m in enumerate(_WORD.finditer(cleaned)):
        w = m.group(0).lower().replace("’", "'")
        if len(w) < min_length or w in stopwords:
            continue
        counts[w] = counts.get(w, 0) + 1
        order.setdefault(w, i)
    ranked = sorted(counts, key=lambda w: (-counts[w], order[w]))
    return ranked[:top]


def parse_config(config):
    """Validate the stage configuration (a dict); raise ValueError naming the key."""
    known = {"top", "min_length", "extra_stopwords"}
    for key in config:
        if key not in known:
            raise ValueError(f"unknown config key `{key}` (known: {', '.join(sorted(known))})")
    top = config.get("top", 5)
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError("config key `top` must be an integer >= 1")
    min_length = config.get("min_length", 3)
    if not isinstance(min_length, int) or isinstance(min_length, bool) or min_length < 1:
        raise ValueError("config key `min_length` must be an integer >= 1")
    extra = config.get("extra_stopwords", [])
    if not isinstance(extra, list) or not all(isinstance(w, str) for w in extra):
        raise ValueError("config key `extra_stopwords` must be a list of strings")
    return top, min_length, DEFAULT_STOPWORDS | {w.lower() for w in extra}
