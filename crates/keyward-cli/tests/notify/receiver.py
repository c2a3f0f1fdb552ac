#!/usr/bin/env python3
"""A webhook receiver for the `[notify]` tests, written apart from the server (Python's stdlib
only) so that it checks the signature independently, as a real receiver would.

For every POST it appends the arrival to --seen (before anything else, so a test can tell an
attempt reached it), then checks X-Keyward-Signature = "sha256=" + hex HMAC-SHA256(secret,
X-Keyward-Timestamp + "." + body) with the key from --secret-file (its one line, stripped)
and a timestamp within --max-skew seconds of now. A verified event is appended to --out as
one JSON line {"timestamp", "signature", "raw", "event"} and answered 204; anything else is
answered 401 and recorded nowhere but --seen. --hang SECS sleeps that long before answering
(a receiver that hangs). --tls-cert/--tls-key serve HTTPS with that certificate. Prints
"ready PORT" once it listens.
"""

import argparse
import hashlib
import hmac
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seen", required=True)
    p.add_argument("--hang", type=float, default=0.0)
    p.add_argument("--max-skew", type=int, default=300)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()
    with open(args.secret_file, "rb") as f:
        secret = f.read().strip()
    lock = threading.Lock()

    def append(path, obj):
        with lock, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            timestamp = self.headers.get("X-Keyward-Timestamp", "")
            signature = self.headers.get("X-Keyward-Signature", "")
            append(args.seen, {"path": self.path, "at": time.time()})
            if args.hang:
                time.sleep(args.hang)
            expected = "sha256=" + hmac.new(
                secret, timestamp.encode() + b"." + raw, hashlib.sha256
            ).hexdigest()
            fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= args.max_skew
            if not (fresh and hmac.compare_digest(expected, signature)):
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            append(
                args.out,
                {
                    "timestamp": timestamp,
                    "signature": signature,
                    "content_type": self.headers.get("Content-Type", ""),
                    "raw": raw.decode("utf-8"),
                    "event": json.loads(raw),
                },
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
