#!/usr/bin/env python3
"""A stand-in for the helper at its socket path, for the tests that a client sends nothing to a
listener that is not root (crates/keyward-sys/src/helper_client_tests.rs,
crates/keyward-cli/tests/impostor_helper.rs). Bind argv[1], print `ready <euid>`, then for
each of argv[2] connections answer the first bytes with argv[3] (hex: the helper's hello
reply, so a client that went on would send its request, password and all) and print how many
bytes arrived before the client closed (5 s at most each; 30 s for each connection to come).
"""
import os, socket, sys
path, conns, hello = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
s.settimeout(30)
print("ready", os.geteuid(), flush=True)
for _ in range(conns):
    c, _ = s.accept()
    c.settimeout(5)
    n = 0
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            if n == 0:
                c.sendall(hello)
            n += len(b)
    except socket.timeout:
        pass
    print(n, flush=True)
    c.close()
