#!/usr/bin/env python3
"""Size rule (docs/architecture.md, "Code layout"): no production source file over 600 lines and
no function over 100 lines.

"Production" is every `.rs` file under a workspace crate's `src/` (tests, benches, fuzz targets
and build scripts are not), counted up to its `#[cfg(test)]` module. A function's length runs
from its `fn` line to its closing brace, found by matching braces outside comments, strings and
character literals. Prints every offender and exits 1 if there is one; `--report` prints the
largest files and functions as well.
"""
import pathlib
import re
import sys

MAX_FILE = 600
MAX_FN = 100
ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted(
    p for p in [*ROOT.glob("crates/*/src/**/*.rs"), *ROOT.glob("loadtest/src/**/*.rs")]
)

TEST_MOD = re.compile(r"^\s*#\[cfg\(test\)\]\s*$")
FN = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:default\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?"
    r"(?:extern\s+\"[^\"]*\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)"
)


def production_lines(lines):
    """Lines before the first `#[cfg(test)]` attribute (the test module is last by convention)."""
    for i, line in enumerate(lines):
        if TEST_MOD.match(line):
            return lines[:i]
    return lines


def blank_code(text):
    """The text with comments, strings and char literals replaced by spaces (newlines kept), so
    that braces can be matched."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 300]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'", text[i:i + 12])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:  # a lifetime or label
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(lines):
    """(name, first line number, length in lines) of every function with a body."""
    code = blank_code("\n".join(lines)).split("\n")
    found = []
    for start, line in enumerate(code):
        m = FN.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for end in range(start, len(code)):
            for ch in code[end]:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
                elif ch == ";" and not opened and depth == 0:
                    break  # a declaration without a body
            else:
                if opened and depth == 0:
                    found.append((m.group(1), start + 1, end - start + 1))
                    break
                continue
            break
    return found


def main():
    report = "--report" in sys.argv
    bad, files, fns = [], [], []
    for path in SOURCES:
        rel = path.relative_to(ROOT)
        lines = production_lines(path.read_text().split("\n"))
        files.append((len(lines), rel))
        if len(lines) > MAX_FILE:
            bad.append(f"{rel}: {len(lines)} production lines (at most {MAX_FILE})")
        for name, line, length in functions(lines):
            fns.append((length, f"{rel}:{line} {name}"))
            if length > MAX_FN:
                bad.append(f"{rel}:{line}: fn {name} is {length} lines (at most {MAX_FN})")
    if report:
        print("largest files:", *(f"  {n:5} {p}" for n, p in sorted(files, reverse=True)[:10]), sep="\n")
        print("longest functions:", *(f"  {n:5} {p}" for n, p in sorted(fns, reverse=True)[:10]), sep="\n")
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} over the size rule (scripts/check-size.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
