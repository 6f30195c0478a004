"""Temporal over mutual TLS, as the chart's `temporal.tls` configures it (NICOTASK_TEMPORAL_TLS_*).

The dev server speaks plain gRPC, so a TLS front (asyncio, ALPN h2, client
certificate required) forwards to it, the way a TLS-terminating frontend or
proxy would. The operator's and worker's `connect()` reach Temporal through
it with the CA, certificate and key files; without a client certificate, or
trusting another CA, the handshake fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from nicotask.settings import Settings
from nicotask.temporal.connection import connect

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: Any,
    issuer: tuple[x509.Name, Any] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


class Pki:
    """A CA, the front's server certificate (127.0.0.1) and a client certificate."""

    def __init__(self, folder: Path) -> None:
        ca_key, other_key = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
        ca = _cert("nicotask-test-ca", ca_key, None, ca=True)
        self.ca = folder / "ca.crt"
        _write(self.ca, ca)
        self.other_ca = folder / "other-ca.crt"
        _write(self.other_ca, _cert("another-ca", other_key, None, ca=True))
        server_key = ec.generate_private_key(ec.SECP256R1())
        self.server = folder / "server.crt"
        _write(
            self.server,
            _cert("temporal", server_key, (ca.subject, ca_key), server=True),
            server_key,
        )
        client_key = ec.generate_private_key(ec.SECP256R1())
        self.client = folder / "client.crt"
        _write(self.client, _cert("nicotask-worker", client_key, (ca.subject, ca_key)), client_key)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest_asyncio.fixture(loop_scope="session")
async def tls_front(devenv: Any, tmp_path: Path) -> AsyncIterator[tuple[str, Pki]]:
    """127.0.0.1:<port> speaking mTLS, forwarding to the dev server."""
    pki = Pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server, pki.server.with_suffix(".key"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    host, port = devenv.temporal_address.rsplit(":", 1)

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield address, pki
    finally:
        server.close()


def _settings(address: str, **tls: Any) -> Settings:
    return Settings(temporal_address=address, temporal_tls=True, **tls)


async def test_operator_and_worker_reach_temporal_over_mtls(tls_front: tuple[str, Pki]) -> None:
    address, pki = tls_front
    client = await connect(
        _settings(
            address,
            temporal_tls_ca_file=str(pki.ca),
            temporal_tls_cert_file=str(pki.client),
            temporal_tls_key_file=str(pki.client.with_suffix(".key")),
        )
    )
    # A real RPC through the TLS front: the dev server's namespace.
    desc = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace="default")
    )
    assert desc.namespace_info.name == "default"


@pytest.mark.parametrize("missing", ["client certificate", "the right CA"])
async def test_without_client_certificate_or_with_another_ca_no_connection(
    tls_front: tuple[str, Pki], missing: str
) -> None:
    address, pki = tls_front
    if missing == "client certificate":
        settings = _settings(address, temporal_tls_ca_file=str(pki.ca))
    else:
        settings = _settings(
            address,
            temporal_tls_ca_file=str(pki.other_ca),
            temporal_tls_cert_file=str(pki.client),
            temporal_tls_key_file=str(pki.client.with_suffix(".key")),
        )
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(connect(settings), timeout=30)
