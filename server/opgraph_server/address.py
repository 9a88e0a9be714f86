"""Addresses of a server: ``tcp://host:port`` and ``unix:///path``, parsed for listening and
connecting alike (the server and the clients share this module; it imports nothing of theirs),
and ``http://host:port``, where a server serves the web viewer (a browser's address: the page
and MessagePack-RPC over a WebSocket; the Python client does not connect to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

DEFAULT_URL = "tcp://127.0.0.1:7450"
"""Where ``opgraph serve`` listens, and clients connect, by default."""


@dataclass(frozen=True)
class Address:
    """A parsed listen/connect URL: ``tcp://host:port``, ``unix:///path`` or
    ``http://host:port``."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_url(url: str, *, listen: bool = False) -> Address:
    """``tcp://host:port`` or ``unix:///path`` (and, with ``listen``, ``http://host:port``) to
    an `Address`; ValueError naming the problem."""
    if not isinstance(url, str):
        raise ValueError(f"address must be a string, got {type(url).__name__}")
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        if not path:
            raise ValueError(f"{url!r}: a unix address needs a path (unix:///tmp/opgraph.sock)")
        return Address("unix", path=path)
    if parsed.scheme in ("tcp", "http"):
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number within 0..65535") from None
        example = "tcp://127.0.0.1:7450" if parsed.scheme == "tcp" else "http://127.0.0.1:7451"
        if not parsed.hostname or port is None:
            raise ValueError(f"{url!r}: a {parsed.scheme} address needs a host and a port "
                             f"({example})")
        if parsed.scheme == "http" and not listen:
            raise ValueError(f"{url!r} is a web viewer's address, for a browser; a client "
                             "connects to the server's tcp://host:port or unix:///path")
        if parsed.scheme == "http" and parsed.path not in ("", "/"):
            raise ValueError(f"{url!r}: an http address is a host and a port, without a path "
                             f"({example})")
        return Address(parsed.scheme, host=parsed.hostname, port=port)
    more = ", unix:///path or http://host:port" if listen else " or unix:///path"
    raise ValueError(f"{url!r}: use tcp://host:port{more}")
