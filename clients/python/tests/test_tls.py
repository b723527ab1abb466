"""The client and the worker against a mutual-TLS server: the certificates come from the
repository's ``scripts/dev-certs.sh`` (a private CA, a server certificate for 127.0.0.1 and
localhost, a client certificate), the server is the real binary with ``--tls-cert``,
``--tls-key`` and ``--tls-client-ca``; and with tokens over TLS (``--auth-tokens`` too)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobwire
from tests.harness import REPO, Redis, Server, create_token
from tests.helpers import running, serving

REFUSED = (jobwire.Unavailable, jobwire.DeadlineExceeded)
"""What a call on a connection the TLS handshake refused fails with: the channel cannot connect
(UNAVAILABLE), or it is still trying when the call's deadline passes."""


@pytest.fixture(scope="module")
def certs(tmp_root: Path) -> Path:
    directory = tmp_root / "certs"
    subprocess.run(
        [str(REPO / "scripts" / "dev-certs.sh"), str(directory), "py-worker"],
        check=True,
        capture_output=True,
    )
    return directory


@pytest.fixture(scope="module")
def tls_server(redis: Redis, tmp_root: Path, certs: Path) -> Iterator[Server]:
    flags = (
        ("--tls-cert", "server.pem"),
        ("--tls-key", "server.key"),
        ("--tls-client-ca", "ca.pem"),
    )
    extra = tuple(arg for flag, name in flags for arg in (flag, str(certs / name)))
    server = Server(redis, tmp_root, extra=extra)
    try:
        yield server
    finally:
        server.stop()


def mutual(certs: Path, server_name: str | None = None) -> jobwire.Tls:
    """The client side of mutual TLS: the CA, the client certificate and its key."""
    return jobwire.Tls(
        ca_file=certs / "ca.pem",
        cert_file=certs / "client.pem",
        key_file=certs / "client.key",
        server_name=server_name,
    )


async def test_a_worker_and_a_producer_over_mutual_tls(
    tls_server: Server, certs: Path, queue: str
) -> None:
    tls = mutual(certs)
    async with jobwire.Client(tls_server.target, tls=tls, timeout=10) as client:
        await serving(client)
        worker = jobwire.Worker(tls_server.target, queues=[queue], concurrency=2, tls=tls)

        @worker.handler("greet")
        async def greet(job: jobwire.Job) -> dict[str, str]:
            return {"hello": job.json()["name"]}

        async with running(worker):
            added = await client.add(queue, "greet", payload={"name": "ada"})
            info = await client.wait(added.id, timeout=10)
        assert info.result_json() == {"hello": "ada"}


async def test_the_server_name_override_names_the_certificate(
    tls_server: Server, certs: Path
) -> None:
    # The certificate names localhost and 127.0.0.1; the override makes gRPC check "localhost"
    # while it connects to the address.
    tls = mutual(certs, server_name="localhost")
    async with jobwire.Client(tls_server.target, tls=tls, timeout=10) as client:
        assert await client.health() is jobwire.ServingStatus.SERVING
    wrong = mutual(certs, server_name="not-the-server.example")
    async with jobwire.Client(tls_server.target, tls=wrong, timeout=3) as client:
        with pytest.raises(REFUSED):
            await client.stats("q")


async def test_plain_text_and_a_missing_client_certificate_are_refused(
    tls_server: Server, certs: Path
) -> None:
    async with jobwire.Client(tls_server.target, timeout=3) as plain:
        with pytest.raises(REFUSED):
            await plain.stats("q")
    no_cert = jobwire.Tls(ca_file=certs / "ca.pem")
    async with jobwire.Client(tls_server.target, tls=no_cert, timeout=3) as client:
        with pytest.raises(REFUSED):
            await client.stats("q")


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="cert_file and key_file"):
        jobwire.Tls(cert_file="client.pem")


@pytest.fixture(scope="module")
def secured_tls(redis: Redis, tmp_root: Path, certs: Path) -> Iterator[tuple[Server, str]]:
    """A server with mutual TLS and tokens: a producer token, and a worker entry that the client
    certificate (``CN=py-worker``) stands in for. Yields the server and the producer's secret."""
    directory = tmp_root / "tls-auth"
    directory.mkdir()
    file = directory / "tokens.json"
    producer = create_token(file, "py-tls-producer", "producer")
    create_token(file, "py-tls-worker", "worker", subject="CN=py-worker")
    flags = (("--tls-cert", "server.pem"), ("--tls-key", "server.key"))
    extra = tuple(arg for flag, name in flags for arg in (flag, str(certs / name)))
    extra += ("--tls-client-ca", str(certs / "ca.pem"), "--auth-tokens", str(file))
    server = Server(redis, directory, extra=extra)
    try:
        yield server, producer
    finally:
        server.stop()


async def test_tokens_over_mutual_tls(secured_tls: tuple[Server, str], certs: Path) -> None:
    server, producer = secured_tls
    tls = mutual(certs)
    # The worker sends no token: its certificate's subject stands in for the worker entry.
    worker = jobwire.Worker(server.target, queues=["py-tls-auth"], tls=tls, token="")

    @worker.handler("echo")
    async def echo(job: jobwire.Job) -> bytes:
        return job.payload

    async with jobwire.Client(server.target, tls=tls, token=producer, timeout=10) as client:
        async with running(worker):
            info = await client.run("py-tls-auth", "echo", b"over tls", timeout=10)
        assert info.result == b"over tls"
    async with jobwire.Client(server.target, tls=tls, token="", timeout=10) as as_worker:
        with pytest.raises(jobwire.PermissionDenied):  # the certificate's entry is a worker's
            await as_worker.add("py-tls-auth", "echo")
    async with jobwire.Client(server.target, tls=tls, token="not-a-token", timeout=10) as bad:
        with pytest.raises(jobwire.Unauthenticated):
            await bad.add("py-tls-auth", "echo")


async def test_a_worker_and_a_producer_send_their_tokens_over_tls(
    redis: Redis, tmp_root: Path, certs: Path, queue: str
) -> None:
    # TLS without client certificates, and tokens: the deployment the compose file shows.
    directory = tmp_root / "tls-tokens"
    directory.mkdir()
    tokens = directory / "tokens.json"
    producer = create_token(tokens, "py-tls-producer", "producer")
    worker_token = create_token(tokens, "py-tls-worker", "worker")
    extra = ("--auth-tokens", str(tokens), "--tls-cert", str(certs / "server.pem"))
    server = Server(redis, directory, extra=extra + ("--tls-key", str(certs / "server.key")))
    try:
        tls = jobwire.Tls(ca_file=certs / "ca.pem")
        worker = jobwire.Worker(server.target, queues=[queue], tls=tls, token=worker_token)

        @worker.handler("greet")
        async def greet(job: jobwire.Job) -> dict[str, str]:
            return {"hello": job.json()["name"]}

        async with jobwire.Client(server.target, tls=tls, token=producer, timeout=10) as client:
            async with running(worker):
                added = await client.add(queue, "greet", payload={"name": "ada"})
                info = await client.wait(added.id, timeout=10)
            assert info.result_json() == {"hello": "ada"}
        async with jobwire.Client(
            server.target, tls=tls, token="jw_" + "0" * 64, timeout=10
        ) as stranger:
            with pytest.raises(jobwire.Unauthenticated):
                await stranger.add(queue, "greet")
    finally:
        server.stop()
