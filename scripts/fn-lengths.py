#!/usr/bin/env python3
"""The longest functions of the workspace's Rust code, tests included.

    python3 scripts/fn-lengths.py [--top N] [--max LINES] [DIR ...]

DIRs default to host sdk tests plugins (build output skipped). A function's
length is its lines from `fn` to its closing brace, comments and blank lines
included; nested functions and closures count inside the function that holds
them and are measured on their own too. The source is lexed, not matched by
line: braces inside strings (raw strings too), character literals and
comments are not counted.

--top N     print the N longest (default 10)
--max LINES exit 1, listing each function longer than LINES (CI uses 100)
"""
import argparse
import os
import re
import sys

SKIP_DIRS = {"target", "node_modules", ".git", "__pycache__"}
FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def blank_out(src):
    """The source with the contents of strings, chars and comments replaced
    by spaces (newlines kept), so braces and `fn` are only seen in code."""
    out = list(src)
    i, n = 0, len(src)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "rbc" and re.compile(r'[bc]?r#*"').match(src, i):
            m = re.compile(r'[bc]?r(#*)"').match(src, i)
            if m and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
                end = '"' + m.group(1)
                j = src.find(end, m.end())
                j = n if j < 0 else j + len(end)
                blank(m.end(), j - len(end))
                i = j
            else:
                i += 1
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i + 1, j)
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\x7b', '\u{..}', '{') or a lifetime ('a).
            m = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'\n])'").match(src, i)
            if m:
                blank(i + 1, m.end() - 1)
                i = m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def functions(path):
    """(length, name, first line) of every function with a body in `path`."""
    src = blank_out(open(path, encoding="utf-8").read())
    line_at = [0] * (len(src) + 1)
    line = 1
    for k, ch in enumerate(src):
        line_at[k] = line
        if ch == "\n":
            line += 1
    line_at[len(src)] = line
    found = []
    for m in FN.finditer(src):
        if m.start() > 0 and (src[m.start() - 1].isalnum() or src[m.start() - 1] == "_"):
            continue
        # The body starts at the first `{` at bracket depth 0 after the
        # signature; a `;` first means a declaration without a body.
        j, depth = m.end(), 0
        while j < len(src):
            ch = src[j]
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif depth == 0 and ch == ";":
                j = -1
                break
            elif depth == 0 and ch == "{":
                break
            j += 1
        if j < 0 or j >= len(src):
            continue
        braces, k = 0, j
        while k < len(src):
            if src[k] == "{":
                braces += 1
            elif src[k] == "}":
                braces -= 1
                if braces == 0:
                    break
            k += 1
        found.append((line_at[k] - line_at[m.start()] + 1, m.group(1), line_at[m.start()]))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="*", default=["host", "sdk", "tests", "plugins"])
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--max", type=int, default=None)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = []
    for d in args.dirs:
        base = d if os.path.isabs(d) else os.path.join(root, d)
        for dirpath, dirnames, names in os.walk(base):
            dirnames[:] = sorted(x for x in dirnames if x not in SKIP_DIRS)
            for name in sorted(names):
                if name.endswith(".rs"):
                    path = os.path.join(dirpath, name)
                    rel = os.path.relpath(path, root)
                    found += [(length, rel, fn, line) for length, fn, line in functions(path)]
    found.sort(key=lambda f: (-f[0], f[1], f[3]))
    for length, path, name, line in found[: args.top]:
        print(f"{length:4} lines  {path}:{line}  {name}")
    if args.max is not None:
        over = [f for f in found if f[0] > args.max]
        if over:
            print(f"\n{len(over)} function(s) over {args.max} lines:", file=sys.stderr)
            for length, path, name, line in over:
                print(f"  {path}:{line}  {name}  {length} lines", file=sys.stderr)
            print("split them (a named step per helper), see docs/ARCHITECTURE.md", file=sys.stderr)
            return 1
        print(f"{len(found)} functions, none over {args.max} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
