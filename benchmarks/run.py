"""All the measured bars of quality.md in one run, the adapter beside its anchors: python benchmarks/run.py

Sets up what it needs (``wrk`` from Debian packages, ``ait_openapi==0.0.1.18`` in a virtualenv of
its own), runs every figure against reference gateways on 127.0.0.1, prints a table and writes the
results as JSON to ``benchmarks/results/`` (a full run also rewrites the table in
``benchmarks/README.md``). ``--quick`` runs each part briefly (the smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway_otel.testing import GatewayProcess, free_port, wait_for_port

HERE = Path(__file__).resolve().parent
AIT_VENV = Path(os.environ.get("GATEWAY_OTEL_BENCH_AIT_VENV", Path.home() / ".cache" / "gateway-otel" / "ait-venv"))
AIT_VERSION = "0.0.1.18"

# -- set-up ------------------------------------------------------------------------------------


def ensure_program(name: str) -> str | None:
    """The path of program ``name``, installed from Debian's packages (as root) when missing."""
    found = shutil.which(name)
    if found or os.geteuid() != 0:
        return found
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", name], check=False, capture_output=True)
    return shutil.which(name)


def ensure_ait() -> str | None:
    python = AIT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(AIT_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import ait_openapi, fastapi, uvicorn, werkzeug"], capture_output=True)
    if probe.returncode != 0:
        install = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                f"ait_openapi=={AIT_VERSION}",
                "fastapi",
                "uvicorn",
                "werkzeug",
            ],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            print(f"ait_openapi could not be installed: {install.stderr[-500:]}", file=sys.stderr)
            return None
    return str(python)


# -- helpers -----------------------------------------------------------------------------------


def wait_stored(gateway: GatewayProcess, rid: str, count: int, timeout: float) -> float | None:
    """Wall time when the gateway first held ``count`` records of ``rid`` (``None``: never within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.count(rid) >= count:
            return time.time()
        time.sleep(0.05)
    return None


CALLS = """
import sys, time
{imports}

@operation_log(is_cost_log=True)
def bill(i):
    return i

trace_id_context.set({rid!r})
caller_id_context.set("alice")
request_url_context.set("http://bench/v1/bill")
print(time.time(), flush=True)
for i in range({n}):
    bill(i)
print(time.time(), flush=True)
time.sleep({linger})
"""
_NAMES = "operation_log, trace_id_context, caller_id_context, request_url_context"
OURS = f"from gateway_otel import {_NAMES}"
AIT = f"from ait_openapi import {_NAMES}"


def end_to_end(python: str, imports: str, gateway: GatewayProcess, n: int, env: dict[str, str]) -> dict[str, Any]:
    """Decorated calls until the gateway holds every record: ops/s and records/s."""
    rid = f"bench-{uuid.uuid4().hex}"
    code = CALLS.format(imports=imports, rid=rid, n=n, linger=120)
    with subprocess.Popen(
        [python, "-c", code],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            started = float(process.stdout.readline())
            calls_done = float(process.stdout.readline())
            stored = wait_stored(gateway, rid, 2 * n, timeout=120)
        finally:
            process.kill()
    held = gateway.count(rid)
    result: dict[str, Any] = {"calls": n, "records_held": held, "caller_seconds": calls_done - started}
    if stored is not None:
        elapsed = stored - started
        result.update(seconds=elapsed, ops_per_s=n / elapsed, records_per_s=2 * n / elapsed)
    return result


def wrk(url: str, script: Path, seconds: float, *args: str) -> dict[str, float]:
    """wrk with 16 connections; ``args`` go to the script (after ``--``)."""
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url, "--", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _latency(re.search(r"50%\s+([\d.]+)(us|ms|s)", out))
    p99 = _latency(re.search(r"99%\s+([\d.]+)(us|ms|s)", out))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99}


def _latency(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


# -- the parts ---------------------------------------------------------------------------------


ANCHOR = "bare OTel span (Batch)"
#: The decorator's caller-side measures, run again on the public path (``GATEWAY_OTEL_LEAN_SPANS=0``).
CALLER_SIDE = ("@operation_log sync", "@operation_log async", "@operation_log generator")


def part_decorator(quick: bool) -> dict[str, Any]:
    def run(env: dict[str, str]) -> dict[str, float]:
        out = subprocess.run(
            [
                sys.executable,
                str(HERE / "decorator.py"),
                "--calls",
                "2000" if quick else "20000",
                "--rounds",
                "2" if quick else "9",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(json.loads(out.strip().splitlines()[-1]))

    results = run({})
    public = run({"GATEWAY_OTEL_LEAN_SPANS": "0"})
    # Each path's ratio is to the anchor of its own run (a minute apart, the machine drifts): the
    # public path's figures are kept as the lean run's anchor times that ratio.
    for name in CALLER_SIDE:
        results[f"{name}, public path"] = public[name] / public[ANCHOR] * results[ANCHOR]
    return results


def part_end_to_end(gateway: GatewayProcess, ait: str | None, quick: bool, spool: str) -> dict[str, Any]:
    env = {"OPENAPI_HOST": gateway.url, "GATEWAY_OTEL_SPOOL_DIR": spool}
    results = {"gateway-otel": end_to_end(sys.executable, OURS, gateway, 500 if quick else 5000, env)}
    # The same with the reference gateway's batch endpoint configured (GATEWAY_OTEL_BATCH=1).
    results["gateway-otel batch"] = end_to_end(
        sys.executable, OURS, gateway, 2000 if quick else 20000, {**env, **BATCH}
    )
    if ait is not None:
        # ait_openapi delivers nothing above about 250 queued records: 200 calls (400 records).
        results["ait_openapi"] = end_to_end(ait, AIT, gateway, 50 if quick else 200, env)
    return results


def part_delivery(gateway: GatewayProcess, quick: bool, spool: str) -> dict[str, Any]:
    """The gateway's accept rate (wrk) beside the adapter's delivery, each against an empty database."""
    results: dict[str, Any] = {}
    if shutil.which("wrk"):
        results["wrk /report/log"] = wrk(gateway.url, HERE / "report_log.lua", 2 if quick else 10)
        with fresh_gateway("delivery-wrk-batch") as (own, _):
            # Requests of BATCH_RECORDS records each: the batch endpoint's accept rate, in records/s.
            taken = wrk(own.url, HERE / "report_log.lua", 2 if quick else 10, str(BATCH_RECORDS))
            results["wrk /report/logs"] = {**taken, "records_per_s": taken["rps"] * BATCH_RECORDS}
    for name, n, extra in (("one per POST", 500 if quick else 5000, {}), ("batch", 2000 if quick else 20000, BATCH)):
        with fresh_gateway(f"delivery-{name}") as (own, tmp):
            env = {"OPENAPI_HOST": own.url, "GATEWAY_OTEL_SPOOL_DIR": f"{tmp}/spool", **extra}
            results[name] = end_to_end(sys.executable, OURS, own, n, env)
    return results


BATCH = {"GATEWAY_OTEL_BATCH": "1"}
#: Records in each request of report_log.lua to the batch endpoint (the adapter's default batch size too).
BATCH_RECORDS = 500
RELAY = {"GATEWAY_OTEL_RELAY": "1"}
#: Delivery in the app's own process (a service's default before the relay was: the GIL shared).
IN_APP = {"GATEWAY_OTEL_RELAY": "0"}


@contextlib.contextmanager
def fresh_gateway(name: str, *, faults: bool = False) -> Iterator[tuple[GatewayProcess, str]]:
    """A reference gateway with an empty database, and a directory for spools; stopped after use.

    Records left in a gateway's database make each insert dearer (32 -> 50 us of CPU per record
    after 100,000), on the cores the measured processes use too: each figure starts from none.
    ``faults``: behind the tests' fault injection (the memory part's outage), else as users run it.
    """
    with tempfile.TemporaryDirectory(prefix=f"gateway-otel-bench-{name.replace(' ', '-')}-") as tmp:
        gateway = GatewayProcess(Path(tmp) / "gateway", faults=faults)
        try:
            yield gateway, tmp
        finally:
            gateway.stop()


#: Rounds of the FastAPI variants: each ratio the median of five (three moved by 0.1x from one run
#: to the next, and the bar sits within that).
FASTAPI_ROUNDS = 5


def part_fastapi(ait: str | None, quick: bool) -> dict[str, Any]:
    """wrk on each variant of the app, each run between two runs of the bare app, in rounds.

    This machine's speed drifts by a fifth within a minute, so each run's ratio is taken to the
    mean of the bare runs just before and just after it (a few seconds apart either side), and the
    median over the rounds is reported. Each run has a gateway of its own, with an empty database
    (``fresh_gateway``).
    """
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed"}
    # gateway: the default, the records built and sent by the relay process (the app serves
    # requests through the middleware), one record per POST; gateway-batch: the same delivering
    # through the reference gateway's batch endpoint (one record per POST cannot keep up with 2
    # records per request at this rate: the rest is spooled). gateway-inapp, gateway-batch-inapp:
    # the same two delivered by the app's own process (GATEWAY_OTEL_RELAY=0).
    variants = [
        ("stock", sys.executable, {}),
        ("gateway", sys.executable, {}),
        ("gateway-batch", sys.executable, BATCH),
        ("gateway-inapp", sys.executable, IN_APP),
        ("gateway-batch-inapp", sys.executable, {**BATCH, **IN_APP}),
    ]
    seconds = 2 if quick else 6
    bare = [_wrk_app("bare", sys.executable, {}, seconds)]
    rounds: dict[str, list[dict[str, float]]] = {"bare": bare}
    for number in range(1 if quick else FASTAPI_ROUNDS):
        # ait_openapi at a hundredth of bare: one round says as much as five.
        extra = [("ait", ait, {})] if ait is not None and number == 0 else []
        for variant, python, extra_env in variants + extra:
            run = _wrk_app(variant, python, extra_env, seconds)
            before, after = bare[-1], _wrk_app("bare", sys.executable, {}, seconds)
            bare.append(after)
            run["ratio"] = 2 * run["rps"] / (before["rps"] + after["rps"])
            run["p99_ratio"] = 2 * run["p99_ms"] / (before["p99_ms"] + after["p99_ms"])
            rounds.setdefault(variant, []).append(run)
    for run in bare:
        run["ratio"] = run["p99_ratio"] = 1.0
    return {
        variant: {
            "rps": statistics.median(run["rps"] for run in runs),
            "p50_ms": statistics.median(run["p50_ms"] for run in runs),
            "p99_ms": statistics.median(run["p99_ms"] for run in runs),
            "ratio": statistics.median(run["ratio"] for run in runs),
            "p99_ratio": statistics.median(run["p99_ratio"] for run in runs),
            "rounds": runs,
        }
        for variant, runs in rounds.items()
    }


def part_inprocess(gateway: GatewayProcess, quick: bool, spool: str) -> dict[str, Any]:
    """``inprocess.py`` with the relay and the batch endpoint (the wrk part's gateway-batch)."""
    out = subprocess.run(
        [sys.executable, str(HERE / "inprocess.py"), "--rounds", "3" if quick else "60"],
        env={**os.environ, "OPENAPI_HOST": gateway.url, "GATEWAY_OTEL_SPOOL_DIR": spool, **BATCH, **RELAY},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def part_instructions(gateway: GatewayProcess, quick: bool) -> dict[str, Any]:
    """``instructions.py``: the instructions a request executes in the app, by variant."""
    import instructions  # beside this file

    if quick:  # valgrind's start-up alone takes minutes for the four variants
        return {"skipped": "not in a quick run"}
    if ensure_program("valgrind") is None:
        return {"skipped": "valgrind is not installed"}
    return instructions.measure(gateway.url)


def _wrk_app(variant: str, python: str, extra_env: dict[str, str], seconds: float) -> dict[str, float]:
    port = free_port()
    # A spool of its own too: a variant must not pick up (and deliver) what the one before left.
    with (
        fresh_gateway(f"fastapi-{variant}") as (gateway, tmp),
        subprocess.Popen(
            [python, str(HERE / "fastapi_app.py"), variant.split("-", maxsplit=1)[0], str(port)],
            env={**os.environ, "OPENAPI_HOST": gateway.url, "GATEWAY_OTEL_SPOOL_DIR": f"{tmp}/spool", **extra_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as app,
    ):
        try:
            wait_for_port(port, process=app)
            url = f"http://127.0.0.1:{port}/v1/chat"
            subprocess.run(
                ["wrk", "-t1", "-c2", "-d1s", "-s", str(HERE / "post.lua"), url], capture_output=True, check=True
            )  # warm-up: token cache, JIT-free but import-heavy first requests
            return wrk(url, HERE / "post.lua", seconds)
        finally:
            # Exit delivers what waits while the gateway takes it (up to drain_on_exit): after a
            # run that left thousands queued, that is not the part measured.
            app.terminate()
            try:
                app.wait(20)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait(20)


MEMORY = """
import os, time
from gateway_otel import operation_log

def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

@operation_log(is_cost_log=True)
def bill(i, payload):
    return {{"ok": i}}

payload = {{"prompt": "x" * 200, "options": list(range(20))}}
for i in range(500):
    bill(i, payload)
time.sleep(1.0)
start = rss_mib()
began = time.monotonic()
i = 0
while time.monotonic() - began < {seconds}:
    for _ in range(50):
        bill(i, payload)
        i += 1
    time.sleep(max(0.0, began + i / 500 - time.monotonic()))
print(start, rss_mib(), i, flush=True)
"""


def part_memory(gateway: GatewayProcess, quick: bool, spool: str) -> dict[str, Any]:
    seconds = 3 if quick else 60
    gateway.faults(report_status=503)
    try:
        out = subprocess.run(
            [sys.executable, "-c", MEMORY.format(seconds=seconds)],
            env={**os.environ, "OPENAPI_HOST": gateway.url, "GATEWAY_OTEL_SPOOL_DIR": spool},
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=True,
        ).stdout
    finally:
        gateway.faults()
    start, end, calls = out.split()
    return {
        "seconds": seconds,
        "ops": int(calls),
        "rss_start_mib": float(start),
        "rss_growth_mib": float(end) - float(start),
    }


# -- the table ---------------------------------------------------------------------------------


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, figure, target) lines of the table."""
    table: list[tuple[str, str, str]] = []
    dec = results.get("decorator", {})
    anchor = dec.get(ANCHOR)
    for name, micros in dec.items():
        if anchor and name.startswith(("@operation_log", "lean span")):
            target = "reported" if "delivery" in name or name.startswith("lean") else "<= 1.3x (caller's side)"
            table.append(
                (f"{name} vs bare span", f"{micros:.1f} us = {micros / anchor:.2f}x ({anchor:.1f} us)", target)
            )
    e2e = results.get("end_to_end", {})
    theirs = e2e.get("ait_openapi", {})
    for variant, label in (("gateway-otel", "one record per POST"), ("gateway-otel batch", "batch endpoint")):
        ours = e2e.get(variant, {})
        if "ops_per_s" in ours:
            figure = f"{ours['ops_per_s']:.0f} ops/s"
            if "ops_per_s" in theirs:
                figure += (
                    f" = {ours['ops_per_s'] / theirs['ops_per_s']:.1f}x ait_openapi ({theirs['ops_per_s']:.0f} ops/s)"
                )
            elif theirs:
                figure += f" (ait_openapi: {theirs['records_held']} of {2 * theirs['calls']} records delivered)"
            table.append((f"decorated ops/s, every record delivered, {label}", figure, ">= 20x"))
    fa = results.get("fastapi", {})
    if "bare" in fa:
        for variant in ("stock", "gateway", "gateway-batch", "gateway-inapp", "gateway-batch-inapp", "ait"):
            if variant in fa:
                v, b = fa[variant], fa["bare"]
                table.append(
                    (
                        f"FastAPI {variant} vs bare (wrk -c16)",
                        f"{v['rps']:.0f} req/s = {v['ratio']:.2f}x; p99 {v['p99_ms']:.1f} ms = "
                        f"{v['p99_ratio']:.1f}x (bare {b['rps']:.0f} req/s, p99 {b['p99_ms']:.1f} ms;"
                        f" {len(v['rounds'])} run{'s' if len(v['rounds']) > 1 else ''} between bare runs)",
                        ">= 0.75x, p99 <= 2x" if variant.startswith("gateway") else "anchor",
                    )
                )
    inp = results.get("inprocess")
    if inp:
        us = inp["us_per_request"]
        table.append(
            (
                "FastAPI gateway-batch in-process (ASGI, no server)",
                f"{us['gateway']:.0f} us vs bare {us['bare']:.0f} us a request = {inp['ratio']:.2f}x; middleware "
                f"{inp['middleware_us']:.0f} us, operation {inp['operation_us']:.0f} us, "
                f"the four request context plugins {inp.get('plugins_us', 0):.0f} us",
                "reported",
            )
        )
    ins = results.get("instructions", {})
    if "per_request" in ins:
        k = {name: count / 1000 for name, count in ins["per_request"].items()}
        table.append(
            (
                "instructions a request in the app (callgrind, in-process)",
                f"gateway {k['gateway']:.0f}k vs bare {k['bare']:.0f}k = {ins['ratio']:.2f}x; instrument_app "
                f"{ins['middleware'] / 1000:.0f}k (its request record pair {ins['request_records'] / 1000:.0f}k), "
                f"operation {ins['operation'] / 1000:.0f}k",
                "reported",
            )
        )
    de = results.get("delivery", {})
    limit = de.get("wrk /report/log", {}).get("rps")
    single = de.get("one per POST", {}).get("records_per_s")
    if single:
        figure = f"{single:.0f} records/s" + (f" = {single / limit:.2f}x wrk ({limit:.0f} req/s)" if limit else "")
        table.append(("delivery, one record per POST", figure, ">= 0.8x wrk"))
    batch = de.get("batch", {}).get("records_per_s")
    if batch:
        taken = de.get("wrk /report/logs", {}).get("records_per_s")
        figure = f"{batch:.0f} records/s" + (f" = {batch / taken:.2f}x wrk ({taken:.0f} records/s)" if taken else "")
        table.append(("delivery, batch endpoint", figure, ">= 10,000/s"))
    mem = results.get("memory")
    if mem:
        table.append(
            (f"RSS growth, {mem['seconds']} s outage at 500 ops/s", f"{mem['rss_growth_mib']:.1f} MiB", "<= 64 MiB")
        )
    return table


PARTS = ("decorator", "end_to_end", "delivery", "fastapi", "inprocess", "instructions", "memory")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run of every part (smoke test)")
    parser.add_argument("--only", nargs="*", default=None, choices=PARTS, help=f"parts: {' '.join(PARTS)}")
    args = parser.parse_args(argv)
    wanted = set(args.only or PARTS)
    ensure_program("wrk")
    ait = ensure_ait() if wanted & {"end_to_end", "fastapi"} else None
    results: dict[str, Any] = {"quick": args.quick, "commit": _commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    parts: dict[str, Callable[[GatewayProcess, str], dict[str, Any]]] = {
        "decorator": lambda gateway, tmp: part_decorator(args.quick),
        "end_to_end": lambda gateway, tmp: part_end_to_end(gateway, ait, args.quick, f"{tmp}/spool"),
        "delivery": lambda gateway, tmp: part_delivery(gateway, args.quick, f"{tmp}/spool"),
        "fastapi": lambda gateway, tmp: part_fastapi(ait, args.quick),  # a gateway per run
        "inprocess": lambda gateway, tmp: part_inprocess(gateway, args.quick, f"{tmp}/spool"),
        "instructions": lambda gateway, tmp: part_instructions(gateway, args.quick),
        "memory": lambda gateway, tmp: part_memory(gateway, args.quick, f"{tmp}/spool"),
    }
    for name, run in parts.items():
        if name in wanted:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            # No part depends on the records of another; only the memory part needs an outage.
            with fresh_gateway(name, faults=name == "memory") as (gateway, tmp):
                results[name] = run(gateway, tmp)
    table = rows(results)
    width = max((len(row[0]) for row in table), default=10)
    print(f"\ngateway-otel benchmarks at {results['commit']} ({'quick' if args.quick else 'full'} run)\n")
    for measure, figure, target in table:
        print(f"{measure:<{width}}  {figure}   [target {target}]")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2))
    # A full run is kept (the figures' history lives in these files and in git); a part alone only
    # in latest.json, so that it never replaces the full run of the same day and commit.
    if not args.quick and args.only is None:
        (out_dir / f"{time.strftime('%Y-%m-%d')}-{results['commit']}.json").write_text(json.dumps(results, indent=2))
        write_table(HERE / "README.md", table, results)
    return results


def write_table(readme: Path, table: list[tuple[str, str, str]], results: dict[str, Any]) -> None:
    """Put a full run's table into ``readme`` between its results markers."""
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text or end not in text:
        return
    lines = [
        f"A full run at {results['commit']}, {results['time']} (`benchmarks/results/`):",
        "",
        "| measure | figure | target |",
        "|---|---|---|",
        *(f"| {measure} | {figure} | {target} |" for measure, figure, target in table),
    ]
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1])


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
