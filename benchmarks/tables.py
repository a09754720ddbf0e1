"""The README's benchmark tables, from the benchmarks' JSON results (`benchmarks/results/`).

A table in the README sits between `<!-- table: NAME -->` (or `<!-- table: NAME:KEY -->` for a
file with several tables) and `<!-- /table -->`; NAME is the results file `<NAME>.json`, KEY one
of its `tables` (default: its first). This rewrites what is between the markers: a line naming
the command, commit, date and CPU of the run, then the table.

    python benchmarks/tables.py            # rewrite README.md
    python benchmarks/tables.py --check    # exit 1 if a table differs from its JSON (the tests do)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
RESULTS = os.path.join(ROOT, "benchmarks", "results")
BLOCK = re.compile(r"(<!-- table: ([\w.-]+)(?::([\w.-]+))? -->\n)(.*?)(<!-- /table -->)", re.S)


def load(name: str, results: str = RESULTS) -> dict:
    path = os.path.join(results, f"{name}.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"README table {name!r}: no {os.path.relpath(path, ROOT)} (run the benchmark)")
    with open(path) as f:
        return json.load(f)


def markdown(t: dict) -> str:
    lines = ["| " + " | ".join(t["header"]) + " |", "|" + "---|" * len(t["header"])]
    lines += ["| " + " | ".join(row) + " |" for row in t["rows"]]
    return "\n".join(lines)


def render(doc: dict, key: str | None = None, name: str = "") -> str:
    """The text between the markers: the run's line, the table, its notes."""
    tables = doc.get("tables") or {}
    if not tables:
        raise ValueError(f"{name}.json has no tables")
    key = key or next(iter(tables))
    if key not in tables:
        raise KeyError(f"{name}.json has no table {key!r} (it has {sorted(tables)})")
    t = tables[key]
    commit = doc["commit"][:7] + (" with uncommitted changes" if doc.get("dirty") else "")
    head = (f"`{doc['command']}` at {commit}, {doc['date'][:10]}, {doc['cpu']} ({doc['cores']} cores); "
            f"from `benchmarks/results/{name}.json`:")
    notes = "".join(f"\n{n}" for n in t.get("notes", []))
    return f"{head}\n\n{markdown(t)}\n{notes}{chr(10) if notes else ''}"


def rewrite(text: str, results: str = RESULTS) -> str:
    """`text` (a README) with every marked table regenerated."""
    def fill(m: re.Match) -> str:
        return m.group(1) + render(load(m.group(2), results), m.group(3), m.group(2)) + m.group(5)

    return BLOCK.sub(fill, text)


def stale(text: str, results: str = RESULTS) -> list[str]:
    """The marked tables of `text` that differ from their JSON."""
    out = []
    for m in BLOCK.finditer(text):
        if m.group(4) != render(load(m.group(2), results), m.group(3), m.group(2)):
            out.append(m.group(2) + (f":{m.group(3)}" if m.group(3) else ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report tables that differ from their JSON")
    ap.add_argument("--readme", default=README)
    args = ap.parse_args()
    with open(args.readme) as f:
        text = f.read()
    if args.check:
        bad = stale(text)
        for name in bad:
            print(f"{args.readme}: table {name} differs from benchmarks/results/{name.split(':')[0]}.json")
        sys.exit(1 if bad else 0)
    new = rewrite(text)
    if new != text:
        tmp = args.readme + ".tmp"
        with open(tmp, "w") as f:
            f.write(new)
        os.replace(tmp, args.readme)
    print(f"{len(BLOCK.findall(text))} tables in {os.path.relpath(args.readme, ROOT)}"
          f"{', rewritten' if new != text else ', up to date'}")


if __name__ == "__main__":
    main()
