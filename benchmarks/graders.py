"""Grader table: every candidate grader on the tricky pairs of `tests/grader_pairs.py`.

Candidates, for each grader (gsm8k, math):

- ``previous``: the rules before the grader issue, as recorded verdicts
  (`benchmarks/fixtures/graders_previous.json`, one per pair, recorded once from the frozen copy
  of those rules; it has no time, and a pair added since is left out of its total);
- ``math-verify``: math-verify 0.9.0, ``verify(parse(gold), parse(completion))`` with its signal
  timeouts off (``parsing_timeout=None``, ``timeout_seconds=None``): with them on it calls
  ``signal.alarm`` and fails outside the main thread. The gold goes in as ``\\boxed{gold}`` (a
  GSM8K gold: the number after "####"), the completion as written;
- ``jaxcot``: the shipped graders, `jaxcot.text.grading.grade_gsm8k` / `grade_math`;
- ``jaxcot|math-verify``: jaxcot, and math-verify's verdict where jaxcot says no.

Per grader and candidate: right / total, false positives (graded right, should not be), false
positives on exact values (`grader_pairs.is_exact_gold`), false negatives, and the time for the
whole table. ``--wrong`` lists each candidate's wrong verdicts.

    PYTHONPATH=. python benchmarks/graders.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]

import results  # noqa: E402
from grader_pairs import PAIRS, is_exact_gold  # noqa: E402

from jaxcot.text.grading import grade_gsm8k, grade_math  # noqa: E402

Grader = Callable[[str, str], bool]
PREVIOUS = os.path.join(HERE, "fixtures", "graders_previous.json")


def pair_key(completion: str, gold: str) -> str:
    """The fixture's key for a pair: the first 16 hex digits of sha256(completion NUL gold)."""
    return hashlib.sha256((completion + "\x00" + gold).encode()).hexdigest()[:16]


def recorded_graders(path: str = PREVIOUS) -> dict[str, Grader]:
    """{grader name: grade} answering from the verdicts recorded in `path`: the previous rules are
    no longer code, only their verdicts on the table; None for a pair recorded after them."""
    with open(path) as f:
        verdicts = json.load(f)["verdicts"]
    return {name: (lambda c, g, v=v: v.get(pair_key(c, g))) for name, v in verdicts.items()}


def math_verify_grader() -> Grader | None:
    """math-verify's verdict on (completion, gold), signal timeouts off; None when not installed."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    def grade(completion: str, gold: str) -> bool:
        if "####" in gold:
            gold = gold.rsplit("####", 1)[1].strip()
        if "\\boxed" not in gold:
            gold = "\\boxed{" + gold + "}"
        return verify(parse(gold, parsing_timeout=None), parse(completion, parsing_timeout=None),
                      timeout_seconds=None)

    return grade


def candidates() -> dict[str, dict[str, Grader]]:
    """{candidate: {grader name: grade}} for every candidate that can run here."""
    out = {"previous": recorded_graders(), "jaxcot": {"gsm8k": grade_gsm8k, "math": grade_math}}
    mv = math_verify_grader()
    if mv is not None:
        out["math-verify"] = {"gsm8k": mv, "math": mv}
        out["jaxcot|math-verify"] = {name: (lambda c, g, own=own: own(c, g) or mv(c, g))
                                     for name, own in out["jaxcot"].items()}
    return out


def score(grade: Grader, pairs, *, timed: bool = True) -> dict:
    """Counts of right verdicts, false positives (all, on exact golds), false negatives, seconds
    (None when not `timed`). A pair the grader has no verdict on (None) is left out."""
    start = time.perf_counter()
    verdicts = [grade(p.completion, p.gold) for p in pairs]
    seconds = time.perf_counter() - start if timed else None
    pairs = [p for p, v in zip(pairs, verdicts) if v is not None]
    verdicts = [bool(v) for v in verdicts if v is not None]
    wrong = [p for p, v in zip(pairs, verdicts) if v != p.match]
    false_pos = [p for p in wrong if not p.match]
    return {"right": len(pairs) - len(wrong), "total": len(pairs), "fp": len(false_pos),
            "fp_exact": sum(is_exact_gold(p.gold) for p in false_pos), "fn": len(wrong) - len(false_pos),
            "seconds": seconds, "wrong": wrong}


def time_cell(s: dict) -> str:
    """The time column: seconds to two places, or "-" for recorded verdicts."""
    return "-" if s["seconds"] is None else f"{s['seconds']:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wrong", action="store_true", help="list each candidate's wrong verdicts")
    args = ap.parse_args()
    rows = []
    for cand, graders in candidates().items():
        for name, grade in graders.items():
            rows.append((name, cand, score(grade, PAIRS[name], timed=cand != "previous")))
    rows.sort(key=lambda r: (r[0], r[1]))
    print("| grader | candidate | right / total | % right | false pos. | false pos. exact | false neg. | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cand, s in rows:
        print(f"| {name} | {cand} | {s['right']} / {s['total']} | {100 * s['right'] / s['total']:.1f} | {s['fp']} "
              f"| {s['fp_exact']} | {s['fn']} | {time_cell(s)} |")
    results.write("graders", [dict(grader=name, candidate=cand, **{k: v for k, v in s.items() if k != "wrong"},
                                   wrong=len(s["wrong"])) for name, cand, s in rows],
                  {"graders": results.table(
                      ["grader", "candidate", "right / total", "% right", "false pos.", "false pos. exact",
                       "false neg.", "time (s)"],
                      [[name, cand, f"{s['right']} / {s['total']}", f"{100 * s['right'] / s['total']:.1f}", s["fp"],
                        s["fp_exact"], s["fn"], time_cell(s)] for name, cand, s in rows])}, args=args)
    if args.wrong:
        for name, cand, s in rows:
            print(f"\n## {name} / {cand}: {len(s['wrong'])} wrong")
            for p in s["wrong"]:
                print(f"  expected {p.match!s:5}  gold {p.gold!r:40.40}  {p.completion!r}")


if __name__ == "__main__":
    main()
