#!/usr/bin/env python3
"""Bench-only POP3 server that lists N messages and retrieves none (for idle polls of a huge
mailbox, which Dovecot is too slow to seed). Usage: big_listing.py PORT N [CERT KEY]
(with CERT and KEY: implicit TLS, POP3S)"""
import asyncio
import ssl
import sys

PORT, N = int(sys.argv[1]), int(sys.argv[2])
SIZE = 2048
LIST = b"".join(b"%d %d\r\n" % (i, SIZE) for i in range(1, N + 1)) + b".\r\n"
UIDL = b"".join(b"%d %08X%08X\r\n" % (i, i, 1) for i in range(1, N + 1)) + b".\r\n"


async def session(reader, writer):
    writer.write(b"+OK big listing ready\r\n")
    while line := await reader.readline():
        cmd = line.strip().split(b" ")[0].upper()
        if cmd == b"CAPA":
            writer.write(b"+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n")
        elif cmd in (b"USER", b"PASS", b"NOOP"):
            writer.write(b"+OK\r\n")
        elif cmd == b"STAT":
            writer.write(b"+OK %d %d\r\n" % (N, N * SIZE))
        elif cmd == b"LIST":
            writer.write(b"+OK\r\n" + LIST)
        elif cmd == b"UIDL":
            writer.write(b"+OK\r\n" + UIDL)
        elif cmd == b"QUIT":
            writer.write(b"+OK bye\r\n")
            await writer.drain()
            break
        else:
            writer.write(b"-ERR not here\r\n")
        await writer.drain()
    writer.close()


async def main():
    tls = None
    if len(sys.argv) > 4:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(sys.argv[3], sys.argv[4])
    server = await asyncio.start_server(session, "127.0.0.1", PORT, ssl=tls)
    async with server:
        await server.serve_forever()


asyncio.run(main())
