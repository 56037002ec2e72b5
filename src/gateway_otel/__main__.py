"""``gateway-otel`` and ``python -m gateway_otel``: the command, or which extra it needs."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command; without the ``cli`` extra, say which extra to install (exit code 1)."""
    try:
        from .cli import app
    except ImportError as exc:
        if exc.name is not None and exc.name.startswith("gateway_otel"):
            raise
        print(f"gateway-otel: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    app()


if __name__ == "__main__":
    main()
