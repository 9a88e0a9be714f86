"""Running the language server over stdio (as editors start it) or TCP."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

from opgraph_lsp.link import DEFAULT_URL

log = logging.getLogger(__name__)


def run_stdio(ls: Any, stdin: Any = None, stdout: Any = None) -> int:
    """Serve one editor on stdin/stdout until ``exit`` or the end of stdin; the exit status.

    Nothing else may reach stdout: ``sys.stdout`` is pointed at stderr while serving.
    """
    from pygls.io_ import StdinAsyncReader, StdoutWriter

    from opgraph_lsp.rpcio import serve

    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol
    stop = threading.Event()
    ls._stop_event = stop
    ls.protocol.set_writer(StdoutWriter(stdout))

    async def main() -> None:
        reader = StdinAsyncReader(stdin, ls.thread_pool)
        try:
            await serve(reader, ls.protocol, stop)
        finally:
            ls.protocol.closed = True
            await ls.stop()

    return _run(ls, main)


def run_tcp(ls: Any, host: str, port: int, ready: Any = None) -> int:
    """Serve one editor that connects to ``host:port`` (then stop, like stdio)."""
    from opgraph_lsp.rpcio import StreamReader, serve

    stop = threading.Event()
    ls._stop_event = stop

    async def main() -> None:
        finished = asyncio.get_running_loop().create_future()
        busy = False

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal busy
            if busy:  # one editor per language server, as over stdio
                writer.close()
                return
            busy = True
            server.close()
            ls.protocol.set_writer(_TcpWriter(writer))
            try:
                await serve(StreamReader(reader), ls.protocol, stop)
            finally:
                writer.close()
                if not finished.done():
                    finished.set_result(None)

        server = await asyncio.start_server(connection, host, port)
        where = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
        print(f"opgraph lsp listening on {where} (one editor)", file=sys.stderr, flush=True)
        if ready is not None:
            ready(server.sockets[0].getsockname()[1])
        try:
            await finished
        finally:
            ls.protocol.closed = True
            server.close()
            await ls.stop()

    return _run(ls, main)


class _TcpWriter:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


def _run(ls: Any, main: Any) -> int:
    try:
        asyncio.run(main())
    except SystemExit as exc:  # the exit notification
        ls.link._stop_child()
        return int(exc.code or 0)
    except KeyboardInterrupt:
        pass
    finally:
        ls.link._stop_child()
        if ls._thread_pool is not None:
            ls._thread_pool.shutdown(wait=False, cancel_futures=True)
    # The input ended without exit: per the spec, status 1 unless shutdown came first.
    return 0 if ls.protocol._shutdown else 1


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m opgraph_lsp [--connect URL | --spawn] [--tcp [--port N]]``."""
    parser = argparse.ArgumentParser(prog="opgraph-lsp", description=__doc__)
    parser.add_argument("--connect", default=DEFAULT_URL, metavar="URL")
    parser.add_argument("--spawn", action="store_true")
    parser.add_argument("--tcp", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2087)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    sys.exit(serve(args.connect, spawn=args.spawn, tcp=args.tcp, host=args.host,
                   port=args.port, log_level=args.log_level))


def serve(url: str = DEFAULT_URL, *, spawn: bool = False, tcp: bool = False,
          host: str = "127.0.0.1", port: int = 2087, log_level: str = "warning",
          token: str | None = None) -> int:
    """Build the language server and serve until the editor is done; the exit status."""
    from opgraph_lsp.server import create_server

    level = getattr(logging, log_level.upper(), logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        logging.getLogger("pygls").setLevel(max(level, logging.WARNING))
    ls = create_server(url, token=token, spawn=spawn)
    if tcp:
        return run_tcp(ls, host, port)
    return run_stdio(ls)
