"""Running the reference gateway under uvicorn."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._app import create_app
from ._store import Store, read_config


def build(
    db: str | Path | None = None,
    *,
    config: str | Path | None = None,
    demo: bool = False,
    report_token: str | None = None,
) -> tuple[Store, object]:
    """A store (a temporary database when ``db`` is None) and the app over it."""
    if db is None:
        db = Path(tempfile.mkdtemp(prefix="gateway-otel-")) / "gateway.sqlite3"
    store = Store(db)
    if demo:
        store.load_demo()
    if config is not None:
        store.load_config(read_config(config))
    return store, create_app(store, report_token=report_token)


def run(
    host: str = "127.0.0.1",
    port: int = 8600,
    *,
    db: str | Path | None = None,
    config: str | Path | None = None,
    demo: bool = False,
    log_level: str = "warning",
    report_token: str | None = None,
) -> None:
    """Serve the reference gateway until interrupted."""
    import ipaddress
    import logging

    import uvicorn

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        logging.getLogger("gateway_otel.gateway").warning(
            "the reference gateway listens on %s, beyond this machine: anyone who reaches it can write "
            "billing records and read every request's log (it has no authentication of its own)",
            host,
        )

    _, app = build(db, config=config, demo=demo, report_token=report_token)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)  # type: ignore[arg-type]
