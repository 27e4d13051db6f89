"""`make bench`: every number as a ratio against a floor measured in the same run.

Sections (DESIGN.md, "Measured constraints"; issue "Measurement"):
  0. moto floors: put_item/s and SQS FIFO send+receive+delete/s at a shallow queue
  1. ingest: POST /api/orders over HTTP vs raw TransactWriteItems + SQS send, 1 and 4 threads
  2. order to browser: POST to the trade frame on /ws/events/ at 20/50/100 orders/s vs the fill path alone
  3. fan-out: 200 sockets, 100 events/s through the batching publisher, Redis and daphne vs a plain
     relay consumer fed one group message per event; 2 processes
  4. fault to banner: the throttling experiment to the backpressure frame, 20 trials
  5. reconcile: 10k and 20k divergent trades, pure core and worker
  6. browser: the tape at 200 trades/s in chromium, long tasks and frames
  7. cold import: the SimFill Lambda handler vs django.setup()
  8. matcher: the order book's orders/s on a seeded stream vs a dict-of-deques floor, memory per
     resting order, snapshot rebuild

One module per section (bench/moto_floor.py, ingest.py, order_to_browser.py, fanout.py,
fault_to_banner.py, reconcile.py, browser.py, cold_import.py, matcher.py); bench/report.py
writes the report; the servers are started by exchange_ui/devserver.py, as the tests start them.

    .venv/bin/python -m bench.run [--smoke] [--out DIR] [--only 1,2,...]

Writes DIR/results.json (a list of {"name", "value", "unit", "floor", "ratio", "goal",
"met", "samples"}), DIR/REPORT.md and the charts beside it (DIR defaults to bench/).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.browser import section_browser
from bench.clients import redis_available
from bench.cold_import import section_imports
from bench.fanout import section_fanout
from bench.fault_to_banner import section_fault_to_banner
from bench.ingest import ALONE_PREFIX, section_ingest
from bench.moto_floor import section_moto
from bench.order_to_browser import section_order_to_browser
from bench.reconcile import section_reconcile
from bench.report import SECTIONS, merge_previous, write_report
from bench.results import REQUIRED, ROOT, Results, chart
from bench.server import Server, running
from bench.sizes import SMOKE, Sizes

__all__ = ["REQUIRED", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite: checks the shape, measures nothing")
    parser.add_argument("--out", default=str(ROOT / "bench"))
    parser.add_argument("--only", default="", help="comma-separated section numbers")
    parser.add_argument("--render", action="store_true", help="measure nothing: re-render REPORT.md from the last run's raw.json")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # stop the children on TERM too
    sizes = SMOKE if args.smoke else Sizes()
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if args.render:
        only = set()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.path.insert(0, str(ROOT))
    redis_ok = redis_available(args.redis_url)
    if redis_ok:
        os.environ["REDIS_URL"] = args.redis_url
    else:
        os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    import logging

    logging.getLogger("botocore").setLevel(logging.ERROR)
    from trading import aws
    from trading.motoserver import MotoServer

    res = Results()
    res.notes["_out"] = [str(out)]
    res.notes["_load"] = [" ".join(f"{x:.1f}" for x in os.getloadavg())]
    started = time.time()
    if args.render:
        res.notes.pop("_load", None)  # the run's, not this rendering's
        merge_previous(res, out, only)
        res.notes["_out"] = [str(out)]
        res.notes.setdefault("_elapsed", ["(re-rendered; see the run times below)"])
        analysis_path = Path(__file__).resolve().parent / "ANALYSIS.md"
        write_report(res, out, started, False, analysis_path.read_text() if analysis_path.exists() else "")
        return 0
    moto = MotoServer(log_path=Path(tempfile.gettempdir()) / f"bench-moto-{os.getpid()}.log").start()
    aws.use_endpoint(moto.url)

    def attempt(section: str, run: Callable[[], None]) -> None:
        if section not in only:
            return
        t0 = time.time()
        print(f"[bench] section {section}: {SECTIONS[section]} …", flush=True)
        try:
            run()
        except Exception as error:
            traceback.print_exc()
            res.note(section, f"the section failed: {type(error).__name__}: {str(error)[:300]}")
        print(f"[bench] section {section} done in {time.time() - t0:.0f} s", flush=True)

    server = None
    if only & {"1", "2", "3", "4", "6"}:
        # One server as `make run` starts it, on the Redis channel layer when there is one
        # (the fan-out and the browser tape publish into it from this process). It boots
        # after the sections that need no server: booting beside them took a core from
        # their timings (the reconciler's 20k/10k ratio moved 1.96 -> 2.53 between runs).
        server = Server(moto.url, redis_url=args.redis_url if redis_ok else None, synthetic_rate="0")
    # The API facade alone, on its own tables: what the ingest floor does, and no more.
    alone = Server(moto.url, synthetic_rate="0", args=("--api-only",), env={"EXCHANGE_TABLE_PREFIX": ALONE_PREFIX}) if "1" in only else None
    try:
        attempt("7", lambda: section_imports(res, sizes))
        attempt("5", lambda: section_reconcile(res, sizes))
        if "8" in only:
            from bench.matcher import section_matcher

            attempt("8", lambda: section_matcher(res, sizes, chart))
        attempt("0", lambda: section_moto(res, sizes, moto.url))
        if server is not None:
            with running(server):
                tokens = server.personas()
                trader, staff = tokens["trader"], tokens["staff"]
                if alone is not None:
                    with running(alone):
                        alone_token = alone.personas()["trader"]
                        attempt("1", lambda: section_ingest(res, sizes, moto.url, server, trader, alone, alone_token))
                attempt("2", lambda: section_order_to_browser(res, sizes, moto.url, server, trader, "bench-trader"))
                attempt("4", lambda: section_fault_to_banner(res, sizes, server, staff, trader))
                if redis_ok:
                    attempt("3", lambda: section_fanout(res, sizes, moto.url, args.redis_url, server, staff, args.smoke))
                    attempt("6", lambda: section_browser(res, sizes, server))
                else:
                    for section in ("3", "6"):
                        if section in only:
                            res.note(section, f"skipped: no Redis at {args.redis_url} (fan-out and the browser tape need the Redis channel layer)")
    finally:
        aws.use_endpoint(None)
        moto.stop()
    merge_previous(res, out, only)
    for name in res.missing():
        res.add(name, None, "", goal="not measured in this run", met=None)
    analysis_path = Path(__file__).resolve().parent / "ANALYSIS.md"
    analysis = analysis_path.read_text() if analysis_path.exists() and not args.smoke else ""
    write_report(res, out, started, args.smoke, analysis)
    print(f"[bench] wrote {out / 'results.json'} and {out / 'REPORT.md'} in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
