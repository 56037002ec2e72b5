"""The one scrubbing policy: secrets never leave the process.

Names that hold secrets (authorization, token, password, secret, api key, key, cookie, session,
credential, private key; case and separator insensitive, percent-encoded or not) have their values
replaced by ``"[REDACTED]"`` wherever they appear: argument names, mapping keys (dicts, headers
objects, query parameters), ``(name, value)`` pairs, URL query parameters, and inside text (JSON,
Python reprs, forms, ``name: value``). ``Bearer`` / ``Basic`` credentials and the user info of URLs
(``scheme://user:password@host``) are redacted wherever they occur; a URL keeps its shape. A
number under a name that says ``tokens`` (``tokens``, ``max_tokens``, ``total_tokens``) counts
tokens and is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import orjson

REDACTED = "[REDACTED]"

_SECRET_WORDS = (
    "authorization",
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "apikey",
    "cookie",
    "session",
    "credential",
    "privatekey",
    "accesskey",
    "signature",
)
_SECRET_EXACT = frozenset({"auth", "jwt", "otp", "key"})
#: Names that match a secret word but count things rather than hold secrets (LLM parameters).
_DEFAULT_ALLOW = frozenset(
    {"maxtokens", "maxnewtokens", "prompttokens", "completiontokens", "totaltokens", "numtokens", "tokencount"}
)
_SEPARATORS = re.compile(r"[^a-z0-9]")
#: Cheap first pass over serialized JSON, lower-cased: when none of these words occur, nothing needs
#: scrubbing. A substring test per word, on the JSON text (decoded anyway), then a closer look
#: where ``key`` or ``token`` occurs: ``key`` after ``api``, ``access`` or ``private``; ``token``
#: but not inside a key that says ``tokens`` and holds a number (``"tokens":47``, a count, which AI
#: services return with most answers). A regex that starts with its word looks for the word first.
#: Substring tests beat one regex of every word (Python's regex engine tries the words at each
#: position), and ``in`` on ``str`` beats ``in`` on ``bytes`` by far, hence the text.
_SUSPECT_WORDS = (
    "auth", "passw", "pwd", "secret", "session", "signature", "cookie", "credential", "bearer", "basic",
    '"jwt"', '"otp"',
)  # fmt: skip
_SUSPECT_KEY = re.compile(r"(?:api|access|private).?key|(?<![a-z0-9])key(?![a-z0-9])")
_SUSPECT_TOKEN = re.compile(r'token(?!s[^"\\]*":-?[0-9])')
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{4,}")
#: ``name=value`` in URL queries, forms and free text, ``name: value`` in free text, and both with the
#: name quoted (``"name": "value"`` in JSON text, ``'name': 'value'`` in a Python repr).
_NAMED_VALUE = re.compile(
    r"""(?P<pre>(?:^|(?<=[?&;,\s({\[]))(?P<q>["']?)(?P<name>[A-Za-z0-9_.%\-]+)(?P=q)\s*(?:=|:)\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^?&#\s,;)}\]]*)"""
)
#: The user info of a URL in text: ``postgres://bob:password@db``.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@?#]+@")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def normalize(name: str) -> str:
    return _SEPARATORS.sub("", name.lower())


class Scrubber:
    """Redacts secrets by name, in structures, in URLs and in serialized JSON."""

    def __init__(self, patterns: Iterable[str] = (), allow: Iterable[str] = ()) -> None:
        self._patterns = [re.compile(pattern, re.IGNORECASE) for pattern in patterns]
        self._allow = _DEFAULT_ALLOW | {normalize(name) for name in allow}
        self._cache: dict[str, bool] = {}

    def is_secret(self, name: object) -> bool:
        """Whether values under this name (argument, key, header, query parameter) are secrets."""
        if not isinstance(name, str):
            return False
        known = self._cache.get(name)
        if known is not None:
            return known
        flat = normalize(name)
        secret = flat not in self._allow and (
            flat in _SECRET_EXACT
            or any(word in flat for word in _SECRET_WORDS)
            or any(pattern.search(name) for pattern in self._patterns)
        )
        if len(self._cache) < 4096:
            self._cache[name] = secret
        return secret

    def _redacted(self, key: object, value: object) -> bool:
        """Whether ``value``, under ``key`` in a structure, is redacted (a count of tokens is not)."""
        if not self.is_secret(key):
            return False
        return not (type(value) in (int, float) and "tokens" in normalize(str(key)))

    def scrub_text(self, text: str) -> str:
        """Redact credentials, URL user info and values under secret names inside free text."""
        text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        if "@" in text and "://" in text:
            text = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
        if "=" in text or ":" in text:
            text = _NAMED_VALUE.sub(self._named_repl, text)
        return text

    def _named_repl(self, match: re.Match[str]) -> str:
        name, value = match.group("name"), match.group("value")
        if not self.is_secret(unquote(name)):
            return match.group(0)
        if "tokens" in normalize(name) and _NUMBER.fullmatch(value):
            return match.group(0)  # a count of tokens
        quote = value[0] if value[:1] in ('"', "'") else ""
        return f"{match.group('pre')}{quote}{REDACTED}{quote}"

    def scrub_url(self, url: str) -> str:
        """The URL with secret query parameters and user info redacted."""
        if "?" not in url and "@" not in url:
            return url  # no query and no user info: nothing to redact (most requests)
        try:
            parts = urlsplit(url)
        except ValueError:
            return self.scrub_text(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(self.is_secret(key) for key, _ in pairs):
                query = urlencode(
                    [(key, REDACTED if self.is_secret(key) else value) for key, value in pairs], safe="[]"
                )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def scrub(self, value: Any) -> Any:
        """A copy of a JSON-like structure with every secret redacted."""
        if isinstance(value, dict):
            return {key: REDACTED if self._redacted(key, item) else self.scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            if len(value) == 2 and isinstance(value[0], str) and self._redacted(value[0], value[1]):
                return [value[0], REDACTED]  # a (name, value) pair: a header, a form field
            return [self.scrub(item) for item in value]
        if isinstance(value, str):
            return self.scrub_text(value)
        return value

    def suspects(self, text: str) -> bool:
        """Whether serialized JSON ``text`` may hold a secret (``False``: it holds none of the secret
        words, nor a match of a configured pattern, and needs no scrubbing)."""
        low = text.lower()
        if "%" in low:
            low = unquote(low)  # percent-encoded names (``access%5Ftoken``)
        if "://" in low and "@" in low and _USERINFO.search(low) is not None:
            return True
        for word in _SUSPECT_WORDS:
            if word in low:
                return True
        if "key" in low and _SUSPECT_KEY.search(low) is not None:
            return True
        if "token" in low and _SUSPECT_TOKEN.search(low) is not None:
            return True
        # The extras only when configured: no generator per call on the default policy.
        return bool(self._patterns) and any(pattern.search(text) is not None for pattern in self._patterns)

    def scrub_json(self, data: bytes, text: str | None = None) -> bytes:
        """Serialized JSON with every secret redacted; returns ``data`` itself when nothing is suspect.
        ``text``: ``data`` decoded, when the caller has it already."""
        if not self.suspects(data.decode("utf-8", errors="replace") if text is None else text):
            return data
        return orjson.dumps(self.scrub(orjson.loads(data)))


#: The policy in force; ``configure()`` replaces it with one that has the configured extras.
default_scrubber = Scrubber()
