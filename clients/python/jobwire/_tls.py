"""TLS to a jobwire server started with ``--tls-cert`` (and, for mutual TLS, ``--tls-client-ca``).

:class:`Tls` names the files; :class:`jobwire.Client` and :class:`jobwire.Worker` take it as
``tls=`` and turn it into ``grpc.ssl_channel_credentials`` plus, for a server name override, the
channel options gRPC reads it from. The files are read when the channel is opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Tls:
    """How to reach a TLS server.

    ``ca_file``: PEM CA certificates to trust for the server's certificate (``None``: gRPC's
    default roots). ``cert_file`` and ``key_file``: a PEM client certificate and its key, for a
    server that requires one (give both or neither). ``server_name``: check the server's
    certificate against this name instead of the target's host (e.g. when connecting by IP
    address to a server whose certificate names its DNS name).
    """

    ca_file: PathLike | None = None
    cert_file: PathLike | None = None
    key_file: PathLike | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "tls: give cert_file and key_file together (a client certificate and its key)"
            )

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials, the files read now."""

        def read(path: PathLike | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )

    def options(self) -> tuple[tuple[str, Any], ...]:
        """The channel options of the server name override (none without one)."""
        if self.server_name is None:
            return ()
        return (
            ("grpc.ssl_target_name_override", self.server_name),
            ("grpc.default_authority", self.server_name),
        )


def channel_security(
    tls: Tls | None,
    credentials: grpc.ChannelCredentials | None,
    options: tuple[tuple[str, Any], ...],
) -> tuple[grpc.ChannelCredentials | None, tuple[tuple[str, Any], ...]]:
    """The credentials and options of a channel given ``tls`` or raw ``credentials`` (not both)."""
    if tls is None:
        return credentials, options
    if credentials is not None:
        raise ValueError("give either tls or credentials")
    return tls.credentials(), options + tls.options()
