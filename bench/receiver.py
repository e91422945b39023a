#!/usr/bin/env python3
"""A minimal webhook receiver for the benchmark: answers 200 to every POST, counts requests.

Usage: receiver.py PORT   (prints the count on SIGTERM to stderr)
"""
import http.server
import signal
import socket
import sys
import threading

COUNT = 0
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

    def setup(self):
        super().setup()
        # One write per response and no Nagle: otherwise delayed ACKs cap each connection at
        # about 25 requests a second and the "ceiling" measures TCP timers, not the server.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self):
        global COUNT
        length = int(self.headers.get("content-length", "0"))
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)
        with LOCK:
            COUNT += 1
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True

    def stop(*_):
        print(COUNT, file=sys.stderr, flush=True)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
