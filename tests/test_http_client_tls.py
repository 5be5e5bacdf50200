"""The HTTP client over TLS, as it reaches Azure: certificates verified, the host name checked, connections kept.

Against a local TLS server with a certificate made for the test (openssl), on asyncio's loop and on uvloop's.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from support.loops import on_each_loop

from serve_app.http_client import ConnectFailed, Endpoint, HTTPClient

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for `localhost` only (not for 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate can be made for the TLS tests")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )
    yield cert, key


@asynccontextmanager
async def tls_server(cert: Path, key: Path) -> AsyncIterator[tuple[int, list[int]]]:
    """Answers every request on a connection; yields its port and the number of requests per connection."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    per_connection: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_connection.append(0)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length")
                )
                await reader.readexactly(length)
                per_connection[-1] += 1
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], per_connection
    finally:
        server.close()


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


@on_each_loop
async def test_a_call_over_tls_verifies_the_certificate_and_keeps_its_connection(
    certificate: tuple[Path, Path],
) -> None:
    async with tls_server(*certificate) as (port, per_connection):
        client = HTTPClient(connect_timeout_s=5, read_timeout_s=5, ssl_context=trusting(certificate[0]))
        endpoint = Endpoint.of(f"https://localhost:{port}/openai/v1/chat/completions")
        for _ in range(3):
            answer = await client.post(endpoint, b"{}")
            assert (answer.status, await answer.read()) == (200, b"{}")
        await client.aclose()
        assert per_connection == [3]


@pytest.mark.parametrize(
    "host, trusted",
    [("localhost", False), ("127.0.0.1", True)],  # a certificate nobody vouches for; a name it was not made for
    ids=["untrusted certificate", "host name not in the certificate"],
)
@on_each_loop
async def test_a_server_that_cannot_prove_its_name_is_refused_before_anything_is_sent(
    host: str, trusted: bool, certificate: tuple[Path, Path]
) -> None:
    async with tls_server(*certificate) as (port, per_connection):
        # Without a context of its own the client trusts the system's authorities, as it does for Azure.
        client = HTTPClient(
            connect_timeout_s=5, read_timeout_s=5, ssl_context=trusting(certificate[0]) if trusted else None
        )
        with pytest.raises(ConnectFailed, match="SSLCertVerificationError"):
            await client.post(Endpoint.of(f"https://{host}:{port}/x"), b"{}")
        await client.aclose()
        assert sum(per_connection) == 0
