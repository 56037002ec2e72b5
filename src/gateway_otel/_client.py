"""The gateway's authentication and billing checks, with a token cache and single-flight look-ups."""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

import httpx
from opentelemetry import context as otel_context

from ._errors import AuthorizationException, GatewayUnavailableError
from ._metrics import LOOKUP_RESULTS, add_token_cache
from ._otel_internals import suppressed
from ._pipeline import current_pipeline
from ._records import ANONYMOUS
from ._settings import load_settings
from ._transport import HttpConfig

VALIDATE_PATH = "/v1/openapi/validate/tokens"
SUPPORT_MODEL_PATH = "/v1/openapi/support/model"
BALANCE_PATH = "/v1/openapi/check/account/balance"
MAX_CACHED_TOKENS = 10_000
#: The context of the adapter's own calls: instrumentations (httpx's) leave them alone.
_SUPPRESSED = suppressed(otel_context.Context())
#: Longest token sent to the gateway: a longer one is malformed (gateways refuse headers of this size).
MAX_TOKEN_CHARS = 8192


def token_key(token: str) -> bytes:
    """The cache key of a token: a hash, so the cache never holds a token. BLAKE2s, from the
    standard library's own code: the middleware hashes the token of every request, and OpenSSL's
    SHA-256 took twice as long (most of it in setting up the digest, for a token this short)."""
    return hashlib.blake2s(token.encode("utf-8", "surrogatepass")).digest()


def bare_token(authorization: str | None) -> str:
    """The token of an ``Authorization`` value (a bare token or ``Bearer <token>``)."""
    token = (authorization or "").strip()
    scheme, _, credentials = token.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else token


class GatewayClient:
    """Calls the gateway's ``validate/tokens``, ``support/model`` and ``check/account/balance``.

    Validated tokens are cached (keyed by a hash of the token) for ``token_ttl`` seconds, rejected
    ones for ``failure_ttl``; network errors are never cached. Concurrent look-ups of one token make
    one gateway call. Without ``base_url`` every caller is ``anonymous`` and every check passes.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 5.0,
        token_ttl: float = 300.0,
        failure_ttl: float = 5.0,
        http: HttpConfig | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self._http = http if http is not None else load_settings({}).http
        #: Token look-ups by result (hit, miss: a gateway call, rejected), for the adapter's metrics.
        self.lookups = dict.fromkeys(LOOKUP_RESULTS, 0)
        add_token_cache(self)
        self._http_options: dict[str, Any] | None = None
        self._timeout = timeout
        self._token_ttl = token_ttl
        self._failure_ttl = failure_ttl
        self._cache: OrderedDict[bytes, tuple[float, str | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._async_flights: dict[tuple[int, bytes], asyncio.Future[str]] = {}
        self._sync_flights: dict[bytes, threading.Event] = {}
        # One client per event loop (an AsyncClient belongs to the loop it first ran in), forgotten
        # with its loop: each ``asyncio.run()`` of a long-lived process makes a new loop.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._sync_client: httpx.Client | None = None

    @classmethod
    def from_settings(cls) -> GatewayClient:
        settings = current_pipeline().settings
        return cls(
            settings.openapi_host,
            timeout=settings.timeout,
            token_ttl=settings.token_ttl,
            failure_ttl=settings.token_failure_ttl,
            http=settings.http,
        )

    # -- cache ---------------------------------------------------------------------------------

    def _cached(self, key: bytes) -> tuple[bool, str | None]:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return False, None
            expires, caller = entry
            if expires < time.monotonic():
                del self._cache[key]
                return False, None
            return True, caller

    def _remember(self, key: bytes, caller: str | None) -> None:
        ttl = self._token_ttl if caller is not None else self._failure_ttl
        with self._lock:
            self._cache[key] = (time.monotonic() + ttl, caller)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHED_TOKENS:
                self._cache.popitem(last=False)

    def _from_cache(self, caller: str | None) -> str:
        """A look-up the cache answered: the caller id, or the rejection it remembers (counted)."""
        self.lookups["hit" if caller is not None else "rejected"] += 1
        return self._result(caller)

    @staticmethod
    def _result(caller: str | None) -> str:
        if caller is None:
            raise AuthorizationException("invalid token")
        return caller

    # -- HTTP ----------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        """httpx's options from the configuration delivery uses too: its TLS context, its proxy."""
        if self._http_options is None:
            url = self.base_url or ""
            self._http_options = {
                "base_url": url,
                "timeout": self._timeout,
                "verify": self._http.ssl_context() if url.startswith("https:") else True,
                "proxy": self._http.proxy_for(url) if url else None,
                "trust_env": False,  # the same proxy and certificates as delivery, decided here
            }
        return self._http_options

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # No idle keep-alive: look-ups are rare (cached), and a connection left idle in a loop that
            # ends with its server would never be closed.
            client = httpx.AsyncClient(**self._options(), limits=httpx.Limits(max_keepalive_connections=0))
            self._async_clients[loop] = client
        return client

    def _client(self) -> httpx.Client:
        if self._sync_client is None:
            self._sync_client = httpx.Client(**self._options())
        return self._sync_client

    @staticmethod
    def _data(response: httpx.Response) -> Any:
        """The ``data`` of a well-formed success; fails closed: a refusal, an error envelope or an
        answer that is not the envelope is ``AuthorizationException``, a server error or an
        unreachable gateway ``GatewayUnavailableError``."""
        if response.status_code >= 500:
            raise GatewayUnavailableError(f"gateway answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise AuthorizationException("invalid token")
        try:
            envelope = response.json()
            code, data = envelope.get("code", 0), envelope["data"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise AuthorizationException("the gateway's answer is not its envelope") from None
        if code not in (0, 200):
            raise AuthorizationException("invalid token")
        return data

    @classmethod
    def _caller_of(cls, data: Any) -> str:
        """The caller id the gateway confirmed; anything but a non-empty string confirms no one."""
        if not isinstance(data, str) or not data:
            raise AuthorizationException("invalid token")
        return data

    async def _aget(self, path: str, token: str, params: dict[str, Any] | None = None) -> Any:
        # The adapter's own calls are not the user's: no spans, no trace headers (instrumentation of
        # httpx, if any, is suppressed for them).
        quiet = otel_context.attach(_SUPPRESSED)
        try:
            response = await self._async_client().get(path, params=params, headers={"authorization": token})
        except httpx.HTTPError as exc:
            raise GatewayUnavailableError(f"gateway unreachable: {exc!r}") from exc
        finally:
            otel_context.detach(quiet)
        return self._data(response)

    def _get(self, path: str, token: str, params: dict[str, Any] | None = None) -> Any:
        quiet = otel_context.attach(_SUPPRESSED)
        try:
            response = self._client().get(path, params=params, headers={"authorization": token})
        except httpx.HTTPError as exc:
            raise GatewayUnavailableError(f"gateway unreachable: {exc!r}") from exc
        finally:
            otel_context.detach(quiet)
        return self._data(response)

    # -- token validation -----------------------------------------------------------------------

    def _prepare(self, authorization: str | None) -> tuple[str, bytes] | None:
        """(token, cache key) to look up, or ``None`` without a gateway (every caller is anonymous)."""
        token = bare_token(authorization)
        if self.base_url is None:
            return None
        if not token:
            raise AuthorizationException("missing token")
        if len(token) > MAX_TOKEN_CHARS or not (token.isascii() and token.isprintable()):
            raise AuthorizationException("malformed token")
        return token, token_key(token)

    def _cached_caller(self, authorization: str | None) -> str | None:
        """The caller id of ``authorization`` when no gateway call is needed for it (cached, or no
        gateway), else ``None``; raises as ``avalidate_token`` does. The middleware's path for
        almost every request: no coroutine to make and await."""
        prepared = self._prepare(authorization)
        if prepared is None:
            return ANONYMOUS
        # Read without the lock (one dict look-up is atomic): an entry that expired is left to
        # ``avalidate_token``, which removes it under the lock and asks the gateway again.
        entry = self._cache.get(prepared[1])
        if entry is None or entry[0] < time.monotonic():
            return None
        caller = entry[1]  # ``_from_cache`` written out: this runs for nearly every request
        if caller is None:
            self.lookups["rejected"] += 1
            raise AuthorizationException("invalid token")
        self.lookups["hit"] += 1
        return caller

    async def avalidate_token(self, token: str | None) -> str:
        """The caller id of ``token``; raises ``AuthorizationException`` when the gateway rejects it."""
        prepared = self._prepare(token)
        if prepared is None:
            return ANONYMOUS
        token, key = prepared
        hit, caller = self._cached(key)
        if hit:
            return self._from_cache(caller)
        flight_key = (id(asyncio.get_running_loop()), key)
        flight = self._async_flights.get(flight_key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._async_flights[flight_key] = flight
        try:
            caller = await self._alookup(token, key)
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            flight.set_result(caller)
            return caller
        finally:
            del self._async_flights[flight_key]

    async def _alookup(self, token: str, key: bytes) -> str:
        self.lookups["miss"] += 1
        try:
            caller = self._caller_of(await self._aget(VALIDATE_PATH, token))
        except AuthorizationException:
            self.lookups["rejected"] += 1
            self._remember(key, None)
            raise
        self._remember(key, caller)
        return caller

    def validate_token(self, token: str | None) -> str:
        """The caller id of ``token`` (blocking); raises ``AuthorizationException`` on a bad token."""
        prepared = self._prepare(token)
        if prepared is None:
            return ANONYMOUS
        token, key = prepared
        while True:
            hit, caller = self._cached(key)
            if hit:
                return self._from_cache(caller)
            with self._lock:
                waiting = self._sync_flights.get(key)
                if waiting is None:
                    flight = self._sync_flights[key] = threading.Event()
            if waiting is None:
                break
            # Another thread looks this token up; when it failed on the network, the loop tries again.
            waiting.wait(self._timeout + 1)
        try:
            return self._lookup(token, key)
        finally:
            with self._lock:
                del self._sync_flights[key]
            flight.set()

    def _lookup(self, token: str, key: bytes) -> str:
        self.lookups["miss"] += 1
        try:
            caller = self._caller_of(self._get(VALIDATE_PATH, token))
        except AuthorizationException:
            self.lookups["rejected"] += 1
            self._remember(key, None)
            raise
        self._remember(key, caller)
        return caller

    # -- billing checks ------------------------------------------------------------------------

    async def asupport_model(self, token: str | None, model: str) -> bool:
        if self.base_url is None:
            return True
        return bool(await self._aget(SUPPORT_MODEL_PATH, bare_token(token), {"model": model}))

    def support_model(self, token: str | None, model: str) -> bool:
        if self.base_url is None:
            return True
        return bool(self._get(SUPPORT_MODEL_PATH, bare_token(token), {"model": model}))

    async def aaccount_balance_enough(self, token: str | None, cost: float = 0.0) -> bool:
        if self.base_url is None:
            return True
        return bool(await self._aget(BALANCE_PATH, bare_token(token), {"cost": cost}))

    def account_balance_enough(self, token: str | None, cost: float = 0.0) -> bool:
        if self.base_url is None:
            return True
        return bool(self._get(BALANCE_PATH, bare_token(token), {"cost": cost}))

    def check(self) -> bool:
        """Whether the gateway answers at all (any answer below 500 counts)."""
        if self.base_url is None:
            return False
        try:
            return self._client().get(VALIDATE_PATH).status_code < 500
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        """Close the blocking client's connections."""
        client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        clients, self._async_clients = self._async_clients, weakref.WeakKeyDictionary()
        for client in clients.values():
            await client.aclose()


_default: GatewayClient | None = None
_default_lock = threading.Lock()


def default_client() -> GatewayClient:
    """The process's client, configured like the pipeline."""
    global _default
    with _default_lock:
        if _default is None or _default.base_url != (current_pipeline().settings.openapi_host or None):
            if _default is not None:
                _default.close()
            else:
                atexit.register(_close_default)
            _default = GatewayClient.from_settings()
        return _default


def _close_default() -> None:
    if _default is not None:
        _default.close()


def validate_token(token: str) -> str:
    """The caller id of ``token``; raises ``AuthorizationException`` on a bad token."""
    return default_client().validate_token(token)


def support_model(token: str, model: str) -> bool:
    """Whether the token's caller may use ``model``."""
    return default_client().support_model(token, model)


def account_balance_enough(token: str, cost: float = 0.0) -> bool:
    """Whether the token's caller has at least ``cost`` left."""
    return default_client().account_balance_enough(token, cost)


def check_configuration(connect: bool = False) -> bool:
    """``True`` when the gateway is configured (and, with ``connect=True``, answers)."""
    try:
        settings = current_pipeline().settings
    except Exception:
        return False
    if not settings.gateway_configured:
        return False
    return default_client().check() if connect else True
