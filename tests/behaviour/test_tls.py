"""Both doors over TLS (``--tls-cert``/``--tls-key``): the REST door, which accepts its own
connections (``doors/_rest_connections.Acceptor``), and the gRPC door, each through the Python
client verifying the daemon's certificate; a plaintext client gets nothing served.

The certificate is made by trustme for ``127.0.0.1`` and ``localhost``, signed by a CA of its own."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
import trustme
from helpers import serving
from sockbroker.server import Daemon
from sockbroker_client import AsyncBroker

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("sockbroker-tls") / "token"


@pytest.fixture(scope="module")
async def daemon(
    ca: trustme.CA, token_file: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Daemon]:
    folder = tmp_path_factory.mktemp("tls")
    issued = ca.issue_cert(LOOPBACK, "localhost")
    cert, key = folder / "cert.pem", folder / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for blob in issued.cert_chain_pems[1:]:
        blob.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    async with serving(token_file, tls_cert=cert, tls_key=key) as daemon:
        yield daemon


async def _round_trip(broker: AsyncBroker) -> tuple[int, str, int, bytes] | tuple[None, None, None, None]:
    """A datagram from one of the daemon's UDP sockets to another, through ``broker``."""
    receiver, sender = await broker.udp_open_socket(), await broker.udp_open_socket()
    await receiver.bind(LOOPBACK, 0)
    _, port = (await receiver.addresses(port_numbers=True))[:2]
    await sender.send_to(LOOPBACK, int(port), b"over tls")
    return await receiver.receive(64, timeout=5)


@pytest.mark.parametrize("door", ["rest", "grpc"])
async def test_a_client_that_verifies_the_certificate_is_served(
    daemon: Daemon, ca: trustme.CA, token_file: pathlib.Path, tmp_path: pathlib.Path, door: str
) -> None:
    token = token_file.read_text().strip()  # noqa: ASYNC240 - a few bytes, once
    if door == "rest":
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        broker = await AsyncBroker.connect(
            f"https://{LOOPBACK}:{daemon.rest_port}", transport="rest", token=token, verify=str(bundle)
        )
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        broker = await AsyncBroker.connect(
            f"{LOOPBACK}:{daemon.grpc_port}", transport="grpc", token=token, credentials=credentials
        )
    try:
        count, _host, _port, data = await _round_trip(broker)
    finally:
        await broker.aclose()
    assert (count, data) == (8, b"over tls")


async def test_plaintext_http_to_the_tls_rest_door_is_not_served(daemon: Daemon) -> None:
    async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{daemon.rest_port}", timeout=5) as client:
        with pytest.raises(httpx.HTTPError):
            await client.get("/metrics")
