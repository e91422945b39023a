#!/usr/bin/env python3
"""Seed a Maildir with generated messages: genmail.py MAILDIR COUNT SIZE PREFIX [--uid N].

Each message is CRLF text of about SIZE bytes with a unique Subject "<PREFIX> <n>: ..." and
some lines starting with "." (POP3 dot-stuffing). Files are written in tmp/ and renamed into
new/, owned by --uid, as a delivery agent would.
"""
import argparse
import os
import random
import time

TOPICS = ["Quarterly report", "Lunch on Friday?", "Invoice 4711", "Re: build failures",
          "Holiday photos", "Server maintenance window", "Grüße aus Köln", "Meeting notes"]


def message(prefix: str, n: int, size: int, rnd: random.Random) -> bytes:
    head = (f"From: Demo Sender <sender{n % 7}@example.org>\r\nTo: demo@example.net\r\n"
            f"Subject: {prefix} {n}: {TOPICS[n % len(TOPICS)]}\r\n"
            f"Message-ID: <{prefix}-{n}-{rnd.getrandbits(64):x}@popbridge.demo>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n").encode()
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit – äöü ✓ 0123456789\r\n".encode()
    body = bytearray()
    i = 0
    while len(head) + len(body) < size:
        body += (b"." if i % 10 == 0 else b"") + line
        i += 1
    return head + bytes(body)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("maildir")
    p.add_argument("count", type=int)
    p.add_argument("size", type=int)
    p.add_argument("prefix")
    p.add_argument("--uid", type=int, default=None)
    a = p.parse_args()
    rnd = random.Random(a.prefix)
    stamp = int(time.time())
    for n in range(a.count):
        name = f"{stamp}.M{n}P{os.getpid()}.{a.prefix}"
        tmp = os.path.join(a.maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(message(a.prefix, n, a.size, rnd))
        if a.uid is not None:
            os.chown(tmp, a.uid, a.uid)
        os.rename(tmp, os.path.join(a.maildir, "new", name))


if __name__ == "__main__":
    main()
