"""``python -m gateway_otel.gateway``: the reference gateway (see ``gateway-otel gateway --help``)."""

from __future__ import annotations

import argparse
import os

from ._server import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway_otel.gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--db", default=None, help="SQLite file (a temporary one by default)")
    parser.add_argument("--config", default=None, help="callers, tokens, models, balances, prices (JSON)")
    parser.add_argument("--demo", action="store_true", help="also know the demo callers alice and bob")
    parser.add_argument(
        "--report-token",
        default=os.environ.get("GATEWAY_OTEL_REPORT_TOKEN"),
        help="writes of records need 'Authorization: Bearer TOKEN' (default: $GATEWAY_OTEL_REPORT_TOKEN)",
    )
    args = parser.parse_args()
    run(
        args.host,
        args.port,
        db=args.db,
        config=args.config,
        demo=args.demo,
        report_token=args.report_token,
    )


if __name__ == "__main__":
    main()
