"""`jaxcot report RUN_DIR`: rebuild RUN_DIR/report.html from a finished run folder (its
results.json, auc.json, metrics, sets, scored chains, eval results and fingerprints).

    jaxcot report runs/demo
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="rebuild a run folder's report.html", description=__doc__)
    p.add_argument("run_dir", help="a run folder (runs/<name>) holding results.json")
    p.set_defaults(func=run)


def run(args) -> int:
    from jaxcot.eval.html import write_report_html

    path = write_report_html(args.run_dir)
    print(f"wrote {path}", file=sys.stderr)
    return 0


__all__ = ["register", "run"]
