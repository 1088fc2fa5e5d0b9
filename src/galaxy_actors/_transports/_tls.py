"""TLS for ``wss://``: the client's `ssl.SSLContext`, built once from a connector's options,
and the words a TLS failure is reported with.

Rules of this file:
- Verification is on unless a user turns it off by name (``insecure_skip_verify``); nothing
  here turns it off for them, and a file that cannot be loaded is a `ConfigurationError` at
  construction, never a failure at the first connect.
- One context per connector, shared by every connection: building one loads the system's CA
  store, a cost a fleet reconnecting at once would otherwise pay per device (the figure is in
  docs/performance.md, "Figures behind choices in the code").
- No Trio, no sockets: values in, values out.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from .._sansio._errors import ConfigurationError

__all__ = ["client_context", "describe_tls_error"]

PathArg = str | os.PathLike[str]


def client_context(
    *,
    ca_file: PathArg | None = None,
    client_cert: PathArg | None = None,
    client_key: PathArg | None = None,
    insecure_skip_verify: bool = False,
) -> ssl.SSLContext:
    """A client context that verifies the server (against ``ca_file`` if given, else the
    system's CAs) and presents ``client_cert`` (with ``client_key``, or a key inside the
    certificate's file) when given. Raises `ConfigurationError`."""
    if client_key is not None and client_cert is None:
        raise ConfigurationError("client_key needs client_cert (the certificate it signs for)")
    if insecure_skip_verify and ca_file is not None:
        raise ConfigurationError(
            "ca_file and insecure_skip_verify contradict each other: a CA file is for "
            "verifying the server, insecure_skip_verify turns verification off"
        )
    cafile = _readable("ca_file", ca_file)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"ca_file {cafile}: cannot load it as PEM: {exc}") from None
    if insecure_skip_verify:
        # In this order: check_hostname must be off before verify_mode may be CERT_NONE.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    certfile = _readable("client_cert", client_cert)
    if certfile is not None:
        keyfile = _readable("client_key", client_key)
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"client_cert {certfile}: cannot load it"
                + (f" with client_key {keyfile}" if keyfile else "")
                + f": {exc}"
            ) from None
    return context


def _readable(name: str, path: PathArg | None) -> str | None:
    if path is None:
        return None
    text = os.fspath(path)
    if not text:
        raise ConfigurationError(f"{name} must not be empty")
    if not Path(text).is_file():
        raise ConfigurationError(f"{name} {text}: no such file")
    return text


def describe_tls_error(exc: ssl.SSLError) -> str:
    """What went wrong, in OpenSSL's words: ``CERTIFICATE_VERIFY_FAILED: <why>`` for a
    certificate, else the reason code (``TLSV13_ALERT_CERTIFICATE_REQUIRED``...)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"{exc.reason}: {exc.verify_message}"
    return exc.reason or str(exc)
