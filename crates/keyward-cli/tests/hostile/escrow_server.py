#!/usr/bin/env python3
"""A hostile escrow server for keyward's tests (tests/hostile_escrow.rs): it speaks just enough
of the escrow protocol (POST /v1/enroll, POST /v1/devices/ID/checkin,
PUT /v1/devices/ID/escrow/VOLUME) to drive the real agent, and misbehaves in one chosen way per
run. Standard library only.

    escrow_server.py MODE --log FILE [--reply FILE] [--upstream URL] [--record FILE]
                     [--only TEXT] [--phase head|body] [--interval SECONDS]

It prints "listening on http://127.0.0.1:PORT" on its first line of standard output, and logs
every request it receives ("METHOD PATH", one a line) to --log, so a test can count how often
the agent came back and see where it went. When the agent hangs up on a reply still being sent,
it logs "METHOD PATH gave up after SECONDS" to FILE.gaveup.

Modes that misbehave on every request:
  malformed   200 with a body that is not JSON
  oversized   200 with a 50 MiB body (Content-Length given)
  endless     200 with a chunked body that never ends
  hang        read the request, never answer
  unavailable 503, every time
  redirect    302 to /elsewhere/PATH on this server (where a check-in or an enrollment would
              succeed)
  refuse-big  403 with a 512 KiB JSON error message full of terminal escapes
  trickle     the reply one byte every --interval seconds (default 1), forever: with --phase
              head from its status line on, with --phase body after whole headers that promise
              1 MiB; only to requests whose path holds --only (default: every request), others
              as in "enroll"
Modes that answer check-ins well (no rotation asked for, no commands) and lie elsewhere:
  receipt     answer escrow uploads with the JSON in --reply (a forged or replayed receipt)
  command     add the JSON in --reply (a signed command) to every check-in answer; escrow
              uploads get 503
  enroll      answer every enrollment 200 with the JSON in --reply (a single-use token
              accepted as often as it is presented, a device id, a signature)
And one honest mode:
  record      forward every request to --upstream (the real server) byte for byte; write the
              body of each successful escrow upload's answer (a genuine receipt) to --record,
              and of each successful enrollment (a genuine answer) to --record.enroll; append
              every request as it came (request line, all headers, body) to --record.wire
"""

import argparse
import http.client
import json
import http.server
import sys
import threading
import time
import urllib.parse

CHECKIN_OK = b'{"rotate":[],"commands":[]}'
OVERSIZED = 50 << 20
CHUNK = b"x" * (64 << 10)
ENROLLED_ELSEWHERE = b'{"device_id":"dev-elsewhere","signature":""}'


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=[
        "malformed", "oversized", "endless", "hang", "unavailable", "redirect",
        "refuse-big", "trickle", "receipt", "command", "enroll", "record",
    ])
    p.add_argument("--log", required=True)
    p.add_argument("--reply")
    p.add_argument("--upstream")
    p.add_argument("--record")
    p.add_argument("--only", default="")
    p.add_argument("--phase", choices=["head", "body"], default="body")
    p.add_argument("--interval", type=float, default=1.0)
    return p.parse_args()


ARGS = parse_args()
LOG_LOCK = threading.Lock()


def reply_file():
    with open(ARGS.reply, "rb") as f:
        return f.read().strip()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def handle_any(self):
        with LOG_LOCK, open(ARGS.log, "a") as log:
            log.write(f"{self.command} {self.path}\n")
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(min(length, 1 << 20)) if length else b""
        started = time.monotonic()
        try:
            getattr(self, "mode_" + ARGS.mode.replace("-", "_"))(body)
        except (BrokenPipeError, ConnectionResetError):
            # The agent gave up reading (its size limit or timeout): what it should do.
            self.close_connection = True
            with LOG_LOCK, open(ARGS.log + ".gaveup", "a") as log:
                log.write(f"{self.command} {self.path} gave up after "
                          f"{time.monotonic() - started:.1f}\n")

    def answer(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def is_escrow(self):
        return "/escrow/" in self.path

    def mode_malformed(self, _body):
        self.answer(200, b'{"rotate": ["data", \x00\x1b[2J "device": ')

    def mode_oversized(self, _body):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(OVERSIZED))
        self.end_headers()
        sent = 0
        while sent < OVERSIZED:
            self.wfile.write(CHUNK)
            sent += len(CHUNK)

    def mode_endless(self, _body):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        frame = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"
        while True:
            self.wfile.write(frame)

    def mode_hang(self, _body):
        while True:
            time.sleep(3600)

    def mode_unavailable(self, _body):
        self.answer(503, b'{"error":"down for maintenance, forever"}')

    def mode_redirect(self, body):
        if self.path.startswith("/elsewhere/"):
            # Only reached if the agent followed the redirect: a check-in "succeeds" here.
            if self.path.endswith("/v1/enroll"):
                return self.answer(200, ENROLLED_ELSEWHERE)
            if self.is_escrow():
                return self.mode_unavailable(body)
            return self.answer(200, CHECKIN_OK)
        self.answer(302, b"", [("location", "/elsewhere" + self.path)])

    def mode_refuse_big(self, _body):
        message = ("\x1b[2J\x1b]0;owned\x07 refused " * 20000)[:512 << 10]
        self.answer(403, json.dumps({"error": message}).encode())

    def mode_trickle(self, body):
        if ARGS.only not in self.path:
            return self.mode_enroll(body)
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: 1048576\r\n\r\n")
        if ARGS.phase == "body":
            self.wfile.write(head)
            self.wfile.flush()
            head = b""
        stream = head + b'{"device_id":"' + b"a" * (1 << 20)
        for i in range(len(stream)):
            self.wfile.write(stream[i:i + 1])
            self.wfile.flush()
            time.sleep(ARGS.interval)

    def mode_enroll(self, body):
        if self.path.endswith("/v1/enroll"):
            self.answer(200, reply_file())
        elif self.is_escrow():
            self.mode_unavailable(body)
        else:
            self.answer(200, CHECKIN_OK)

    def mode_receipt(self, _body):
        self.answer(200, reply_file() if self.is_escrow() else CHECKIN_OK)

    def mode_command(self, _body):
        if self.is_escrow():
            return self.mode_unavailable(_body)
        self.answer(200, b'{"rotate":[],"commands":[' + reply_file() + b"]}")

    def mode_record(self, body):
        with LOG_LOCK, open(ARGS.record + ".wire", "ab") as wire:
            wire.write(f"{self.command} {self.path}\n{self.headers}".encode() + body + b"\n\n")
        up = urllib.parse.urlsplit(ARGS.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() == "content-type" or k.lower().startswith("x-keyward-")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        answer = resp.read()
        conn.close()
        if resp.status == 200 and self.command == "PUT" and self.is_escrow():
            with open(ARGS.record, "wb") as f:
                f.write(answer)
        if resp.status == 200 and self.path.endswith("/v1/enroll"):
            with open(ARGS.record + ".enroll", "wb") as f:
                f.write(answer)
        self.answer(resp.status, answer)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
