"""Addresses of a server: ``tcp://host:port`` and ``unix:///path``, parsed for listening and
connecting alike (the server and the clients share this module; it imports nothing of theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

DEFAULT_URL = "tcp://127.0.0.1:7450"
"""Where ``opgraph serve`` listens, and clients connect, by default."""


@dataclass(frozen=True)
class Address:
    """A parsed listen/connect URL: ``tcp://host:port`` or ``unix:///path``."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_url(url: str) -> Address:
    """``tcp://host:port`` or ``unix:///path`` to an `Address`; ValueError naming the problem."""
    if not isinstance(url, str):
        raise ValueError(f"address must be a string, got {type(url).__name__}")
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        if not path:
            raise ValueError(f"{url!r}: a unix address needs a path (unix:///tmp/opgraph.sock)")
        return Address("unix", path=path)
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number within 0..65535") from None
        if not parsed.hostname or port is None:
            raise ValueError(f"{url!r}: a tcp address needs a host and a port "
                             "(tcp://127.0.0.1:7450)")
        return Address("tcp", host=parsed.hostname, port=port)
    raise ValueError(f"{url!r}: use tcp://host:port or unix:///path")
