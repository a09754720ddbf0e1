"""`jaxcot view RUN_DIR [--port N]`: serve a run folder on localhost and print the address of its
report.html (built first if the folder has none); Ctrl-C stops it.

    jaxcot view runs/demo --port 8000
"""

from __future__ import annotations

import functools
import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("view", help="serve a run folder's report.html on localhost", description=__doc__)
    p.add_argument("run_dir", help="a run folder (runs/<name>) holding results.json")
    p.add_argument("--port", type=int, default=8000, help="the port (0: any free one; default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.set_defaults(func=run)


def serve(run_dir: str, host: str = "127.0.0.1", port: int = 8000):
    """An HTTP server of `run_dir` (not yet serving: call serve_forever); report.html built if absent."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from jaxcot.eval.html import write_report_html

    if not os.path.exists(os.path.join(run_dir, "report.html")):
        write_report_html(run_dir)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):  # no line per request
            pass

    return ThreadingHTTPServer((host, port), functools.partial(Quiet, directory=os.path.abspath(run_dir)))


def run(args) -> int:
    server = serve(args.run_dir, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}/report.html", flush=True)
    print("serving; Ctrl-C stops", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


__all__ = ["register", "run", "serve"]
