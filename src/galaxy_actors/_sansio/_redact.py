"""Keeping secrets and hostile text out of what the process prints and logs.

Helpers, plain functions of strings (no I/O, no Trio):

- `mask_url` and `redact` hide the secrets a URL may carry: every query value
  (``?token=***``: agent servers authenticate with ``?token=``, and other parameters may be
  keys too) and the password of its user info. `redact` does it to every URL inside a
  longer text (an error message, a log line), whatever its scheme, so that a URL quoted by
  a library's own message is masked too.
- `bounded` makes a string safe to show that its sender controls (a server's error text,
  a client's field): at most ``limit`` characters, and every control character, newline
  and backslash escaped as ``repr`` does, so it cannot forge a log line or a terminal
  sequence.

(`_throttle.Throttled` keeps what a stranger can trigger at will from flooding the log.)
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["MASK", "RedactingFilter", "bounded", "mask_url", "redact"]

MASK: Final = "***"
# A scheme, "://", then anything up to whitespace or a quote: how URLs sit inside messages
# (repr quotes them; logs separate them with spaces).
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`\x00-\x1f\x7f]+")
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@]*)@")


def _mask_userinfo(match: re.Match[str]) -> str:
    user, sep, _password = match[2].partition(":")
    # "user:password@" keeps the user; a lone "secret@" is likely a key itself.
    return f"{match[1]}{user}:{MASK}@" if sep else f"{match[1]}{MASK}@"


def mask_url(url: str) -> str:
    """``url`` with every query value and any user-info password replaced by ``***``.

    >>> mask_url("wss://agents.example/ws?token=s3cret&region=eu")
    'wss://agents.example/ws?token=***&region=***'

    Works on malformed URLs too (the ones error messages quote): it parses nothing, it only
    splits on ``?``, ``&``, ``=`` and ``#``.
    """
    base, sep, rest = url.partition("?")
    base = _USERINFO.sub(_mask_userinfo, base)
    if not sep:
        return base
    query, hash_sep, fragment = rest.partition("#")
    params = []
    for param in query.split("&"):
        key, eq, value = param.partition("=")
        if eq:
            params.append(f"{key}={MASK}" if value else param)
        else:
            params.append(MASK if key else key)  # a bare value may be a key on its own
    return f"{base}?{'&'.join(params)}{hash_sep}{fragment}"


def redact(text: str) -> str:
    """``text`` with every URL in it masked by `mask_url`."""
    if "://" not in text:  # the usual case, at the cost of one search
        return text
    return _URL.sub(lambda match: mask_url(match[0]), text)


def _escape(char: str) -> str:
    # repr's escapes: \n, \t, \x1b, \u2028, \\ ...; printable characters stay as they are.
    return char if char.isprintable() and char != "\\" else repr(char)[1:-1]


def bounded(text: str, limit: int = 200) -> str:
    """``text`` made safe to log or print: control characters, newlines and backslashes
    escaped as ``repr`` does, and cut to at most ``limit`` characters of output, followed
    by ``… (N more chars)`` when something was cut (N counts characters of ``text``).

    >>> bounded("line one\\nFORGED ERROR")
    'line one\\\\nFORGED ERROR'
    >>> bounded("x" * 300, 10)
    'xxxxxxxxxx… (290 more chars)'
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if len(text) <= limit and text.isprintable() and "\\" not in text:
        return text
    out: list[str] = []
    size = 0
    for index, char in enumerate(text):
        piece = _escape(char)
        if size + len(piece) > limit:
            return "".join(out) + f"… ({len(text) - index} more chars)"
        out.append(piece)
        size += len(piece)
    return "".join(out)


class RedactingFilter(logging.Filter):
    """A logging filter that masks URLs (`redact`) in every record's final message, whoever
    logged it: install it on the handler, where every record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
