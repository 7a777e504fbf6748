"""A proxy in front of a real embedding server that answers the first N
embedding requests with 429 (and a Retry-After), then forwards every request.

    python3 flaky_proxy.py PORT_FILE UPSTREAM_URL BUSY_COUNT

Writes the port it listens on to PORT_FILE. `GET /stats` answers
{"busy": requests answered 429, "forwarded": requests passed on}.
Standard library only.
"""

import http.server
import json
import sys
import threading
import urllib.error
import urllib.request

port_file, upstream, busy_left = sys.argv[1], sys.argv[2].rstrip("/"), int(sys.argv[3])
lock = threading.Lock()
stats = {"busy": 0, "forwarded": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                self.answer(200, json.dumps(stats).encode())
        else:
            self.answer(404, b'{"detail":"not found"}')

    def do_POST(self):
        global busy_left
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with lock:
            busy = busy_left > 0
            if busy:
                busy_left -= 1
                stats["busy"] += 1
            else:
                stats["forwarded"] += 1
        if busy:
            self.answer(
                429,
                b'{"error":{"message":"Rate limit reached; try again in 1s","type":"requests"}}',
                [("retry-after", "1")],
            )
            return
        # The path after /v1 goes to the same path upstream.
        request = urllib.request.Request(
            upstream + self.path[len("/v1"):] if self.path.startswith("/v1") else upstream + self.path,
            data=body,
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                self.answer(r.status, r.read())
        except urllib.error.HTTPError as e:
            self.answer(e.code, e.read())
        except OSError as e:
            self.answer(502, json.dumps({"detail": f"upstream: {e}"}).encode())


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os

os.replace(port_file + ".tmp", port_file)
server.serve_forever()
