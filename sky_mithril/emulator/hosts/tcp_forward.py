"""A TCP forwarder: `python tcp_forward.py LISTEN_HOST LISTEN_PORT TARGET_HOST
TARGET_PORT` accepts connections on the listen address and pipes each, both
ways, to a new connection to the target.

Namespace hosts run it inside a control node's network namespace so that the
node's own address serves the kube API the emulator serves on the bridge.
Standard library only, run by path: it must not import the package (the host
backends' callers may run it with any Python). Prints `listening` once bound.
"""

import asyncio
import sys
from typing import List

_CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies `reader` to `writer` until EOF, then half-closes `writer`."""
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def _forward(target_host: str, target_port: int,
                   client_reader: asyncio.StreamReader,
                   client_writer: asyncio.StreamWriter) -> None:
    """Pipes one accepted connection to a new one to the target."""
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            target_host, target_port)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(_pipe(client_reader, upstream_writer),
                             _pipe(upstream_reader, client_writer))
    finally:
        client_writer.close()
        upstream_writer.close()


async def _serve(listen_host: str, listen_port: int, target_host: str,
                 target_port: int) -> None:
    server = await asyncio.start_server(
        lambda r, w: _forward(target_host, target_port, r, w),
        listen_host, listen_port, reuse_address=True)
    print('listening', flush=True)
    async with server:
        await server.serve_forever()


def main(argv: List[str]) -> int:
    if len(argv) != 4:
        print('usage: tcp_forward.py LISTEN_HOST LISTEN_PORT TARGET_HOST '
              'TARGET_PORT', file=sys.stderr)
        return 2
    listen_host, listen_port, target_host, target_port = argv
    asyncio.run(_serve(listen_host, int(listen_port), target_host,
                       int(target_port)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
