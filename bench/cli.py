"""Run the figures, print the table, write bench/results.json."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import quiet
from bench.harness import FLEET_NOTE, RESULTS, Context, Row, notes, table, write_results

FIGURES = {
    "P1": "bench.p1_push_latency",
    "P2": "bench.p2_push_to_serving",
    "P3": "bench.p3_noop_reconcile",
    "P4": "bench.p4_diff",
    "P5": "bench.p5_rollout_overhead",
    "P6": "bench.p6_rollback",
    "P7": "bench.p7_invoke",
    "P8": "bench.p8_daemon_rss",
    "P9": "bench.p9_cli_startup",
    "P10": "bench.p10_failover",  # two daemons on PostgreSQL, SIGKILL of the leader (issue 16)
    "P11": "bench.p11_dialout",  # rows P11, P11-cpu, P11-rss: dial-out agents (issue 19)
    "P12": "bench.p12_cold_start",
    "P13": "bench.p13_upload",
    "J": "bench.judgment",  # rows J1-J6: the rollout judge over simulated traffic
    "UI": "bench.ui_page",  # rows UI1-UI3: the status page at 2,000 functions, event delay
}


def _log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few runs (< 2 min)")
    parser.add_argument("--only", default="", help="comma-separated figure ids, e.g. P3,P7")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="FIGURE.KEY=VALUE",
        help="override one size of one figure, e.g. P2.count=50 or P3.nodes=200 (repeatable; "
        "each figure's docstring names its keys); for development runs, not for the README",
    )
    args = parser.parse_args(argv)
    params: dict[str, dict[str, str]] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        figure, dot, name = key.partition(".")
        if not sep or not dot or not name or not value:
            parser.error(f"--param {item!r}: expected FIGURE.KEY=VALUE, e.g. P2.count=50")
        params.setdefault(figure.strip().upper(), {})[name.strip()] = value.strip()
    wanted = [f.strip().upper() for f in args.only.split(",") if f.strip()] or list(FIGURES)
    unknown = [f for f in wanted if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    stray = sorted(set(params) - set(wanted))
    if stray:
        parser.error(f"--param for {', '.join(stray)}, which this run does not include")
    work = Path(tempfile.mkdtemp(prefix="gitopsd-bench-"))
    # Every log goes to files under `work`: this process's to bench.log, each child's to
    # its own (support.py); the terminal gets progress lines and the table only.
    log_file = quiet.to_file(work / "bench.log")
    started = time.monotonic()
    rows: list[Row] = []
    errors: dict[str, str] = {}
    print(f"gitopsd bench{' --quick' if args.quick else ''}: {', '.join(wanted)}", flush=True)
    print(f"note: {FLEET_NOTE}", flush=True)
    try:
        for figure in wanted:
            t0 = time.monotonic()
            _log(f"{figure} ...")
            ctx = Context(args.quick, work / figure.lower(), _log, params.get(figure, {}))
            ctx.work.mkdir(parents=True, exist_ok=True)
            load = os.getloadavg()[0]
            try:
                module = importlib.import_module(FIGURES[figure])
                got: list[Row] = module.run(ctx)
                ignored = sorted(set(ctx.params) - ctx.used)
                if ignored:  # a size the figure does not have must not pass silently
                    raise ValueError(f"{figure} has no size {', '.join(ignored)} (--param)")
                for row in got:
                    row.extra.setdefault("loadavg_1min_before", round(load, 2))
                rows.extend(got)
            except Exception as exc:  # one broken figure must not hide the others
                errors[figure] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc(file=log_file)
                _log(f"{figure} FAILED: {errors[figure]} (traceback in {work / 'bench.log'})")
            _log(f"{figure} done in {time.monotonic() - t0:.1f}s")
            write_results(args.output, rows, args.quick, time.monotonic() - started, errors)
    finally:
        log_file.flush()
        if args.keep or errors:
            _log(f"logs and scratch files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    print()
    print(notes(rows))
    for figure, error in errors.items():
        print(f"{figure}: FAILED TO RUN: {error}")
    print(f"\nwrote {args.output} in {time.monotonic() - started:.0f}s", flush=True)
    return 1 if errors else 0
