"""The ``gateway-otel`` command: demo, reference gateway, request logs, checks, spool."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import orjson

from ._errors import missing_extra
from ._metrics import SpoolGauges
from ._settings import load_settings
from ._spool import Spool

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree
except ImportError as exc:
    raise missing_extra("cli", "the gateway-otel command", exc) from exc

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

HostOption = Annotated[
    str | None, typer.Option("--host", help="gateway base URL (default: $OPENAPI_HOST)", show_default=False)
]


# -- rendering --------------------------------------------------------------------------------

#: Control characters (C0, DEL, C1) shown as escapes: a record's text must not drive the terminal.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def plain(value: object) -> str:
    """A record's value as text for a rich string: markup escaped, control characters shown as escapes."""
    return escape(str(value).translate(_CONTROLS))


def _duration(record: dict[str, Any]) -> str:
    return f"{record.get('durationMillis', 0)} ms"


def record_tree(request_id: str, records: Sequence[dict[str, Any]]) -> Tree:
    """A request's records as a tree of operations (nesting from the spans' parent ids)."""
    by_span: dict[str, dict[str, Any]] = {}
    for record in records:
        extra = record.get("extraInfo") or {}
        key = str(extra.get("spanId") or record["uuid"])
        entry = by_span.setdefault(key, {"parent": extra.get("parentSpanId"), "in": None, "out": None})
        entry[record["opLogType"]] = record
    callers = sorted({str(r["callerId"]) for r in records})
    billed = sum(1 for r in records if r["opLogType"] == "out" and r["isCostLog"])
    root = Tree(
        f"[bold]request[/] {plain(request_id)}  [dim]caller[/] {plain(', '.join(callers))}  "
        f"[dim]records[/] {len(records)}  [dim]billed[/] {billed}"
    )
    nodes: dict[str, Tree] = {}

    def label(entry: dict[str, Any]) -> str:
        record = entry["out"] or entry["in"]
        parts = [f"[bold]{plain(record['opType'])}[/]"]
        service = (record.get("extraInfo") or {}).get("service")
        if service:
            parts.append(f"[dim]{plain(service)}[/]")
        out = entry["out"]
        if out is None:
            parts.append("[yellow]in only (running or lost)[/]")
        else:
            status = out["operationStatus"]
            parts.append(f"[green]{status}[/]" if status == "success" else f"[red]{plain(status)}[/]")
            parts.append(_duration(out))
            if out["isCostLog"]:
                parts.append("[magenta]billed[/]" if status == "success" else "[dim]not billed (failed)[/]")
            if out.get("errMsg"):
                parts.append(f"[red]{plain(out['errMsg'])}[/]")
        if entry["in"] is None:
            parts.append("[yellow]no in record[/]")
        return "  ".join(parts)

    intervals: dict[str, tuple[int, float]] = {}  # (start, end) in ms; a running operation has no end
    traces: dict[str, object] = {}
    for key, entry in by_span.items():
        first = entry["in"] or entry["out"]
        start = int(first["startTimeMillis"])
        out = entry["out"]
        intervals[key] = (start, float("inf") if out is None else start + int(out.get("durationMillis") or 0))
        traces[key] = ((out or first).get("extraInfo") or {}).get("traceId")

    order = sorted(by_span, key=lambda key: (intervals[key][0], -intervals[key][1]))
    position = {key: index for index, key in enumerate(order)}
    # Operations whose parent span is not an operation (a server span, say) hang from that span in
    # groups. A group sits under the innermost operation of its trace that ran around all of it:
    # the one that called the service the group ran in. Only operations before the group count.
    groups: dict[str, list[str]] = {}
    for key, entry in by_span.items():
        if entry["parent"] and entry["parent"] not in by_span:
            groups.setdefault(entry["parent"], []).append(key)
    around: dict[str, str | None] = {}
    for parent_id, members in groups.items():
        start = min(intervals[key][0] for key in members)
        end = max(intervals[key][1] for key in members)
        around[parent_id] = None
        for other in order[: min(position[key] for key in members)]:
            other_start, other_end = intervals[other]
            if traces[other] == traces[members[0]] and other_start <= start and end <= other_end:
                around[parent_id] = other  # later in the order: further in

    attaching: set[str] = set()

    def attach(key: str) -> Tree:
        if key in nodes:
            return nodes[key]
        entry = by_span[key]
        parent_key = entry["parent"] if entry["parent"] in by_span and entry["parent"] != key else None
        if entry["parent"] in around:
            parent_key = around[entry["parent"]]
        attaching.add(key)
        # A parent that is being attached would make the operation its own ancestor: the guess of
        # ``around`` when a child's interval equals its parent's (within a millisecond), or records
        # whose parent ids go round in a circle. The operation then hangs from the request.
        parent = attach(parent_key) if parent_key is not None and parent_key not in attaching else root
        attaching.discard(key)
        nodes[key] = parent.add(label(entry))
        return nodes[key]

    for key in order:
        attach(key)
    return root


def billing_table(stats: dict[str, Any]) -> Table:
    table = Table(title="billing at the gateway")
    for column in ("caller", "billed records", "charged", "balance"):
        table.add_column(column, justify="right" if column != "caller" else "left")
    for row in stats["billing"]:
        table.add_row(
            plain(row["callerId"]), str(row["billedRecords"]), f"{row['charged']:.2f}", f"{row['balance']:.2f}"
        )
    return table


def fetch_records(host: str, request_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{host.rstrip('/')}/v1/openapi/log/{request_id}", timeout=10)
    response.raise_for_status()
    return list(response.json()["data"])


def _host(host: str | None) -> str:
    value = host or os.environ.get("OPENAPI_HOST")
    if not value:
        console.print("[red]no gateway: pass --host or set OPENAPI_HOST[/]")
        raise typer.Exit(2)
    return value.rstrip("/")


def _needs_extra(extra: str, what: str, exc: ImportError) -> NoReturn:
    """Say which extra a command needs (the module missing is not the package's own), exit 1."""
    if exc.name is None or exc.name.startswith("gateway_otel"):
        raise exc
    console.print(str(missing_extra(extra, what, exc)), style="red", markup=False, highlight=False)
    raise typer.Exit(1)


# -- commands ---------------------------------------------------------------------------------


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8600,
    db: Annotated[Path | None, typer.Option(help="SQLite database (default: a temporary one)")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON file of callers, tokens, models, balances, prices")] = None,
    demo: Annotated[bool, typer.Option(help="also know the demo callers alice and bob")] = False,
    report_token: Annotated[
        str | None,
        typer.Option(help="writes of records need 'Authorization: Bearer TOKEN'", envvar="GATEWAY_OTEL_REPORT_TOKEN"),
    ] = None,
) -> None:
    """Run the reference gateway."""
    try:
        from .gateway import run
    except ImportError as exc:
        _needs_extra("gateway", "gateway-otel gateway", exc)

    console.print(f"reference gateway on http://{host}:{port}  (db: {db or 'temporary'})")
    run(host, port, db=db, config=config, demo=demo, log_level="info", report_token=report_token)


@app.command()
def logs(request_id: str, host: HostOption = None) -> None:
    """Show a request's records as a tree."""
    records = fetch_records(_host(host), request_id)
    if not records:
        console.print(f"no records for request {plain(request_id)}")
        raise typer.Exit(1)
    console.print(record_tree(request_id, records))


@app.command()
def check(
    host: HostOption = None,
    max_age: Annotated[
        float | None,
        typer.Option(help="also not ready when a spooled record has waited longer than this many seconds"),
    ] = None,
) -> None:
    """Report the configuration, whether the gateway answers and what waits in the spool; exit code
    1 when not ready (a probe for alerts: ``--max-age``)."""
    options = {"openapi_host": host} if host else {}
    try:
        settings = load_settings(options)
    except ValueError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(1) from None
    table = Table(show_header=False)
    table.add_row("OPENAPI_HOST", settings.openapi_host or "[red]not set[/]")
    table.add_row("spool", settings.spool_dir)
    ready = False
    if settings.openapi_host:
        try:
            response = httpx.get(f"{settings.openapi_host}/v1/openapi/validate/tokens", timeout=5)
            ready = response.status_code < 500
            table.add_row("gateway", f"[green]answers[/] (HTTP {response.status_code})" if ready else "[red]error[/]")
        except httpx.HTTPError as exc:
            table.add_row("gateway", f"[red]unreachable[/]: {exc}")
    problems = [] if ready else ["set OPENAPI_HOST" if not settings.openapi_host else "gateway unreachable"]
    try:
        waiting, dead, age = SpoolGauges(Spool(settings.spool_dir).stats).reading()
    except Exception as exc:
        table.add_row("spooled records", f"[red]cannot read the spool[/]: {plain(exc)}")
    else:
        table.add_row("spooled records", f"{waiting} waiting (oldest {age:.1f} s), {dead} dead letters")
        if max_age is not None and age > max_age:
            problems.append(f"a spooled record has waited longer than {max_age:g} s")
    console.print(table)
    if problems:
        console.print("[red]not ready[/]: " + "; ".join(problems))
        raise typer.Exit(1)
    console.print("[green]ready[/]")


@app.command()
def spool(
    action: Annotated[str, typer.Argument(help="show | replay | purge")] = "show",
    spool_dir: Annotated[Path | None, typer.Option(help="spool directory (default: $GATEWAY_OTEL_SPOOL_DIR)")] = None,
    dead_only: Annotated[bool, typer.Option(help="purge: only the dead letters")] = False,
) -> None:
    """Show, replay (deliver now, dead letters included) or purge undelivered records."""
    settings = load_settings({"spool_dir": str(spool_dir)} if spool_dir else {})
    store = Spool(settings.spool_dir)
    if action == "show":
        table = Table(title=f"spool {store.path}")
        for column in ("uuid", "state", "opType", "requestId", "attempts", "last error / reason"):
            table.add_column(column)
        for state, records in (("waiting", store.pending()), ("dead", store.dead_letters())):
            for record in records:
                payload = orjson.loads(record.body)
                table.add_row(
                    plain(record.uuid),
                    state,
                    plain(payload.get("opType")),
                    plain(payload.get("requestId")),
                    str(record.attempts),
                    plain(record.last_error or ""),
                )
        console.print(table)
    elif action == "replay":
        moved = store.requeue_dead_letters()
        if not settings.openapi_host:
            console.print("[red]set OPENAPI_HOST to replay[/]")
            raise typer.Exit(1)
        from ._delivery import Delivery

        Delivery(settings, store).replay(timeout=60)
        waiting, dead = Spool(settings.spool_dir).counts()
        console.print(f"replayed ({moved} dead letters retried): {waiting} still waiting, {dead} dead letters")
        raise typer.Exit(0 if waiting == 0 else 1)
    elif action == "purge":
        console.print(f"removed {store.purge(dead_only=dead_only)} records")
    else:
        console.print(f"[red]unknown action {action!r}[/]: show, replay or purge")
        raise typer.Exit(2)


@app.command()
def demo(
    keep: Annotated[Path | None, typer.Option(help="keep the gateway database and spool in this directory")] = None,
) -> None:
    """The whole path on one machine: reference gateway, instrumented services, sample calls, records."""
    try:
        from . import _demo
    except ImportError as exc:
        _needs_extra("demo", "gateway-otel demo", exc)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        _demo.run(console, keep)
        return
    with tempfile.TemporaryDirectory(prefix="gateway-otel-demo-") as tmp:
        _demo.run(console, Path(tmp))


def main() -> None:
    app()


__all__ = ["app", "billing_table", "fetch_records", "main", "record_tree"]


if __name__ == "__main__":
    main()
