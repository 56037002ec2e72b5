"""One exception hierarchy for everything the adapter raises."""

from __future__ import annotations


class GatewayOtelError(Exception):
    """Base of every exception the adapter raises."""


class ConfigurationError(GatewayOtelError, ValueError):
    """An option or environment variable has a value the adapter cannot use."""


class AuthorizationException(GatewayOtelError):
    """The token is missing, malformed or rejected by the gateway."""


class GatewayUnavailableError(GatewayOtelError):
    """The gateway could not be reached or answered with a server error."""


def missing_extra(extra: str, what: str, cause: ImportError) -> ImportError:
    """The ``ImportError`` for a part of the package whose extra is not installed: it names the extra
    and the install line (the module that was missing is kept as ``name``)."""
    error = ImportError(
        f"{what} needs gateway-otel[{extra}]: pip install 'gateway-otel[{extra}]' (missing module: {cause.name})",
        name=cause.name,
    )
    return error
