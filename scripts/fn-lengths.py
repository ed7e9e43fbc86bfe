#!/usr/bin/env python3
"""The longest functions of a Rust source tree, tests aside (a file's
`#[cfg(test)]` part and `tests.rs` files are skipped).

    python3 scripts/fn-lengths.py [DIR (default host/src)] [N (default 5)]

A function's length is its lines from `fn` to its closing brace, comments
and blank lines included. Braces inside string and character literals are
ignored (raw strings are not parsed; none in this crate hold unbalanced braces).
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "host/src"
top = int(sys.argv[2]) if len(sys.argv) > 2 else 5
found = []
for dirpath, _, names in os.walk(root):
    for name in names:
        if not name.endswith(".rs") or name == "tests.rs":
            continue
        path = os.path.join(dirpath, name)
        lines = open(path, encoding="utf-8").read().split("\n")
        end = next((i for i, l in enumerate(lines) if l.strip().startswith("#[cfg(test)]")), len(lines))
        for i in range(end):
            m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?fn\s+(\w+)", lines[i])
            if not m:
                continue
            depth, started, j = 0, False, i
            while j < end:
                s = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j])
                s = re.sub(r"'(\\.|[^'\\])'", "''", s)
                s = re.sub(r"//.*", "", s)
                for ch in s:
                    if ch == "{":
                        depth, started = depth + 1, True
                    elif ch == "}":
                        depth -= 1
                if (started and depth == 0) or (not started and s.rstrip().endswith(";")):
                    break
                j += 1
            if started:
                found.append((j - i + 1, os.path.relpath(path, root), m.group(5), i + 1))
for length, path, name, line in sorted(found, reverse=True)[:top]:
    print(f"{length:4} lines  {path}:{line}  {name}")
