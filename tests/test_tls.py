"""wss:// against a loopback SimulatedAgent, with certificates trustme makes for each test.

Real time, every wait bounded; "at once" means well under the connector's connect timeout,
which a TLS failure hidden inside trio-websocket would have waited out.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from galaxy_actors import ConfigurationError, FailureReason, open_supervisor
from galaxy_actors._process._config import ConfigError, load_config, parse_config
from galaxy_actors._transports._transport import WEBSOCKET_CLIENTS, WebSocketClient
from galaxy_actors.testing import SimulatedAgent
from galaxy_actors.transport import ConnectError, WebSocketConnector

LIMIT = 10
CONNECT_TIMEOUT = 5.0
AT_ONCE = 1.0


@pytest.fixture(params=WEBSOCKET_CLIENTS)
def websocket(request: pytest.FixtureRequest) -> WebSocketClient:
    """The connect tests run against both WebSocket clients: they keep the same promises."""
    client: WebSocketClient = request.param
    return client


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return path


def server_context(ca: trustme.CA, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


@asynccontextmanager
async def serving(context: ssl.SSLContext) -> AsyncIterator[tuple[SimulatedAgent, str]]:
    agent = SimulatedAgent(devices=["pc"])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(agent.serve_websocket, ssl_context=context))
        assert url.startswith("wss://127.0.0.1:")
        yield agent, url
        nursery.cancel_scope.cancel()


async def connects(connector: WebSocketConnector, url: str) -> tuple[bool, str, float]:
    """Connect device "pc" once: (connected, its last failure, seconds it took)."""
    async with open_supervisor(task_name="tls", connector=connector) as sup:
        sup.add_device("pc", url, "Linux", connect=False)
        start = trio.current_time()
        ok = await sup.connect("pc")
        took = trio.current_time() - start
        if ok:
            assert (await sup.run_task("over TLS", device_id="pc")).ok
        return ok, sup.snapshot("pc").last_failure or "", took


async def test_a_verified_connect_with_ca_file(
    ca: trustme.CA, ca_file: Path, websocket: WebSocketClient
) -> None:
    with trio.fail_after(LIMIT):
        async with serving(server_context(ca)) as (agent, url):
            ok, failure, _ = await connects(
                WebSocketConnector(ca_file=ca_file, websocket=websocket), url
            )
    assert ok, failure
    assert agent.registrations == 1


async def test_a_verified_connect_with_an_ssl_context(
    ca: trustme.CA, websocket: WebSocketClient
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with trio.fail_after(LIMIT):
        async with serving(server_context(ca)) as (_, url):
            ok, failure, _ = await connects(
                WebSocketConnector(ssl_context=context, websocket=websocket), url
            )
    assert ok, failure


async def test_verification_is_on_by_default_and_fails_at_once_as_tls_failed(
    ca: trustme.CA, websocket: WebSocketClient
) -> None:
    connector = WebSocketConnector(connect_timeout=CONNECT_TIMEOUT, websocket=websocket)
    with trio.fail_after(LIMIT):
        async with serving(server_context(ca)) as (agent, url):
            ok, failure, took = await connects(connector, url)
    assert not ok and agent.registrations == 0
    assert took < AT_ONCE, took
    assert failure.startswith("tls_failed: CERTIFICATE_VERIFY_FAILED: "), failure


async def test_a_certificate_for_another_host_is_tls_failed(
    ca: trustme.CA, ca_file: Path, websocket: WebSocketClient
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("agent.example").configure_cert(context)
    connector = WebSocketConnector(
        ca_file=ca_file, connect_timeout=CONNECT_TIMEOUT, websocket=websocket
    )
    with trio.fail_after(LIMIT):
        async with serving(context) as (_, url):
            with pytest.raises(ConnectError) as caught:
                async with connector.open(url):
                    pass
    assert caught.value.reason is FailureReason.TLS_FAILED
    assert "mismatch, certificate is not valid for '127.0.0.1'" in str(caught.value)


async def test_insecure_skip_verify_connects_and_warns_at_every_connect(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture, websocket: WebSocketClient
) -> None:
    connector = WebSocketConnector(insecure_skip_verify=True, websocket=websocket)
    caplog.set_level(logging.WARNING, logger="galaxy_actors.transport")
    with trio.fail_after(LIMIT):
        async with serving(server_context(ca)) as (_, url):
            for _ in range(2):
                ok, failure, _ = await connects(connector, url + "?token=s3cret")
                assert ok, failure
    warnings = [r for r in caplog.records if r.name == "galaxy_actors.transport"]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    message = warnings[0].getMessage()
    assert "insecure_skip_verify" in message and "127.0.0.1" in message
    assert "s3cret" not in message


async def test_a_client_certificate_the_server_requires(
    ca: trustme.CA, ca_file: Path, tmp_path: Path, websocket: WebSocketClient
) -> None:
    client = ca.issue_cert("device-fleet@example.org")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(cert)
    client.private_key_pem.write_to_path(key)
    with_cert = WebSocketConnector(
        ca_file=ca_file, client_cert=cert, client_key=key, websocket=websocket
    )
    without = WebSocketConnector(
        ca_file=ca_file, connect_timeout=CONNECT_TIMEOUT, websocket=websocket
    )
    with trio.fail_after(LIMIT):
        async with serving(server_context(ca, require_client_cert=True)) as (agent, url):
            ok, failure, _ = await connects(with_cert, url)
            assert ok, failure
            # Without one, the server hangs up after our side of the TLS handshake
            # succeeded (TLS 1.3): reported at once all the same.
            ok, failure, took = await connects(without, url)
    assert not ok and took < AT_ONCE, (failure, took)
    assert failure.startswith(("handshake_failed", "tls_failed")), failure
    assert agent.registrations == 1


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"ca_file": "missing.pem"}, "ca_file missing.pem: no such file"),
        ({"client_key": "key.pem"}, "client_key needs client_cert"),
        ({"ca_file": "CA", "insecure_skip_verify": True}, "contradict"),
        ({"ssl_context": "CTX", "ca_file": "CA"}, "ssl_context is used as is"),
        ({"ssl_context": object()}, "must be an ssl.SSLContext"),
        ({"insecure_skip_verify": "yes"}, "must be True or False"),
        ({"ca_file": "NOT_PEM"}, "cannot load it as PEM"),
        ({"client_cert": "NOT_PEM"}, "client_cert"),
    ],
)
def test_tls_options_are_checked_when_the_connector_is_made(
    options: dict[str, object], words: str, ca_file: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    given = {"CA": ca_file, "CTX": ssl.create_default_context(), "NOT_PEM": garbage}
    resolved = {k: given.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ConfigurationError, match=words):
        WebSocketConnector(**resolved)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- [tls] in TOML


def config_text(tls: str) -> str:
    return f'{tls}\n[[devices]]\ndevice_id = "pc"\nserver_url = "wss://127.0.0.1:1/ws"\n'


async def test_the_tls_table_builds_a_verifying_connector(ca: trustme.CA, tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    ca.cert_pem.write_to_path(tmp_path / "certs" / "ca.pem")
    config_file = tmp_path / "galaxy.toml"
    config_file.write_text(config_text('[tls]\nca_file = "certs/ca.pem"'))
    config = load_config(config_file)
    # Relative to the file's folder, not to the working directory.
    assert config.supervisor.tls.ca_file == tmp_path / "certs" / "ca.pem"
    connector = config.supervisor.supervisor_options()["connector"]
    assert isinstance(connector, WebSocketConnector)
    with trio.fail_after(LIMIT):
        async with serving(server_context(ca)) as (_, url):
            ok, failure, _ = await connects(connector, url)
    assert ok, failure


def test_without_a_tls_table_verification_stays_on() -> None:
    connector = parse_config(config_text("")).supervisor.supervisor_options()["connector"]
    assert connector.insecure_skip_verify is False and connector.ca_file is None


@pytest.mark.parametrize(
    ("tls", "words"),
    [
        ('[tls]\nca_file = "nowhere.pem"', "tls: ca_file .*nowhere.pem: no such file"),
        ('[tls]\nclient_key = "k.pem"', "tls: client_key needs client_cert"),
        ('[tls]\nca_file = ""', r"tls.ca_file: must not be empty"),
        ('[tls]\ninsecure_skip_verify = "yes"', "tls.insecure_skip_verify: expected a boolean"),
        ("[tls]\nverify = false", "tls.verify: unknown key"),
    ],
)
def test_a_bad_tls_table_is_a_config_error(tls: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(config_text(tls))


def test_insecure_skip_verify_in_the_tls_table() -> None:
    config = parse_config(config_text("[tls]\ninsecure_skip_verify = true"))
    connector = config.supervisor.supervisor_options()["connector"]
    assert connector.insecure_skip_verify is True
