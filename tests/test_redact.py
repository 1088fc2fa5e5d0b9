"""Masking secrets in URLs and bounding hostile strings: plain functions, no Trio."""

from __future__ import annotations

import io
import logging

import pytest

from galaxy_actors._sansio._redact import RedactingFilter, bounded, mask_url, redact
from galaxy_actors.errors import InvalidServerURL


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("ws://h:1/ws", "ws://h:1/ws"),
        ("ws://h/ws?token=s3cret", "ws://h/ws?token=***"),
        ("wss://h/ws?token=a&region=eu&empty=", "wss://h/ws?token=***&region=***&empty="),
        ("ws://h/ws?s3cret", "ws://h/ws?***"),
        ("ws://h/ws?token=a#frag", "ws://h/ws?token=***#frag"),
        ("ws://user:pw@h/ws", "ws://user:***@h/ws"),
        ("ws://apikey@h/ws", "ws://***@h/ws"),
        ("http://[::1/?token=x", "http://[::1/?token=***"),  # malformed: masked all the same
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_redact_masks_every_url_in_a_text_and_leaves_the_rest() -> None:
    text = "failed: 'ws://a/?token=x' then ws://b/?k=y, done? yes=1"
    # Masks generously: the comma could belong to the value.
    assert redact(text) == "failed: 'ws://a/?token=***' then ws://b/?k=*** done? yes=1"
    plain = "no url here?token=x"
    assert redact(plain) is plain


def test_invalid_server_url_errors_mask_the_token() -> None:
    error = InvalidServerURL("http://h/ws?token=hunter2", "scheme must be ws:// or wss://")
    assert (
        str(error) == "invalid server_url 'http://h/ws?token=***': scheme must be ws:// or wss://"
    )
    assert error.url == "http://h/ws?token=hunter2"  # the caller's own value, unmasked


def test_bounded_escapes_control_characters_so_nothing_forges_a_line() -> None:
    hostile = "oops\nERROR forged line\r\x1b[31m\\n\u2028"
    shown = bounded(hostile, 1000)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert shown == "oops\\nERROR forged line\\r\\x1b[31m\\\\n\\u2028"
    assert bounded("héllo ✓") == "héllo ✓"  # printable text is left alone


def test_bounded_cuts_to_the_limit_and_says_how_much_is_left() -> None:
    assert bounded("x" * 300, 10) == "x" * 10 + "… (290 more chars)"
    assert bounded("abc", 3) == "abc"
    # The bound is on what is shown: escapes count at their escaped length.
    assert bounded("\n" * 10, 5) == "\\n\\n… (8 more chars)"
    assert bounded("", 0) == ""
    with pytest.raises(ValueError):
        bounded("x", -1)


def test_the_filter_masks_urls_in_every_record() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("test_redact")
    log.addHandler(handler)
    try:
        log.warning("connect to %s failed", "ws://h/?token=hunter2")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == "connect to ws://h/?token=*** failed\n"
