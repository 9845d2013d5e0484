#!/usr/bin/env python3
"""A fake GCE metadata server for images/tests/test-drain-agent.sh.

Speaks the wire format the drain agent relies on:
  every /computeMetadata/v1/ request needs `Metadata-Flavor: Google` (else 403); answers carry
  `Metadata-Flavor: Google` and an ETag (a hash of the value, as the real server's)
  GET  .../instance/attributes/vespene-drain     200 value, or 404 when the key is absent;
       ?wait_for_change=true[&last_etag=E][&timeout_sec=N]: answers at once when the current
       ETag differs from last_etag, else blocks until the value changes or N seconds pass, then
       answers the current value
  PUT  .../instance/guest-attributes/vespene/drain   stores the body (403 with
       --no-guest-attributes, as when enable-guest-attributes is not TRUE)
  GET  .../instance/guest-attributes/vespene/drain   200 value or 404
Control endpoints for the test: PUT /_control/drain (body: the value), DELETE /_control/drain
(removes the key), PUT /_control/hang (seconds every metadata request sleeps first).
Every request is appended to --log as one JSON line (t, method, path, status, flavor, value).
Binds 127.0.0.1 only; --port 0 picks a free port, written to --port-file once listening.
"""

import argparse
import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
CHANGED = threading.Condition(LOCK)
STATE = {"drain": None, "guest": {}, "hang": 0.0}
ARGS = None
ATTR = "/computeMetadata/v1/instance/attributes/vespene-drain"
GUEST = "/computeMetadata/v1/instance/guest-attributes/vespene/drain"


def etag(value):
    return hashlib.sha256(("absent" if value is None else "v:" + value).encode()).hexdigest()[:16]


def record(entry):
    entry["t"] = round(time.time(), 3)
    with open(ARGS.log, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def reply(self, status, body="", tag=None, entry=None):
        data = body.encode()
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/text")
        if tag:
            self.send_header("ETag", tag)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        e = {"method": self.command, "path": self.path, "status": status,
             "flavor": self.headers.get("Metadata-Flavor") == "Google"}
        e.update(entry or {})
        with LOCK:
            record(e)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode() if n else ""

    def control(self):
        path = urlsplit(self.path).path
        if path == "/_control/drain":
            with CHANGED:
                STATE["drain"] = self.body() if self.command == "PUT" else None
                value = STATE["drain"]
                CHANGED.notify_all()
            return self.reply(200, "ok", entry={"control": True, "value": value})
        if path == "/_control/hang" and self.command == "PUT":
            with LOCK:
                STATE["hang"] = float(self.body().strip() or 0)
            return self.reply(200, "ok", entry={"control": True})
        return self.reply(404, "Not Found")

    def guarded(self):
        """Common checks of metadata requests: True when the request may proceed."""
        with LOCK:
            h = STATE["hang"]
        if h > 0:
            time.sleep(h)
        if self.headers.get("Metadata-Flavor") != "Google":
            self.reply(403, "Missing required header: Metadata-Flavor")
            return False
        return True

    def do_GET(self):
        if self.path.startswith("/_control/"):
            return self.control()
        url = urlsplit(self.path)
        if not url.path.startswith("/computeMetadata/v1/"):
            return self.reply(404, "Not Found")
        if not self.guarded():
            return
        if url.path == ATTR:
            q = parse_qs(url.query)
            wait = q.get("wait_for_change", ["false"])[0].lower() == "true"
            last = q.get("last_etag", [None])[0]
            timeout = float(q.get("timeout_sec", ["60"])[0])
            with CHANGED:
                start = etag(STATE["drain"])
                if wait and (last is None or last == start):
                    deadline = time.time() + timeout
                    ref = last or start
                    while etag(STATE["drain"]) == ref and time.time() < deadline:
                        CHANGED.wait(max(0.0, deadline - time.time()))
                value = STATE["drain"]
            if value is None:
                return self.reply(404, "Not Found", etag(value), {"value": None})
            return self.reply(200, value, etag(value), {"value": value})
        if url.path == GUEST:
            with LOCK:
                value = STATE["guest"].get("vespene/drain")
            if value is None:
                return self.reply(404, "Not Found")
            return self.reply(200, value, entry={"value": value})
        return self.reply(404, "Not Found")

    def do_PUT(self):
        if self.path.startswith("/_control/"):
            return self.control()
        if not self.guarded():
            return
        if urlsplit(self.path).path != GUEST:
            return self.reply(405, "Method Not Allowed")
        if ARGS.no_guest_attributes:
            return self.reply(403, "Guest attributes endpoint access is disabled.")
        value = self.body()
        with LOCK:
            STATE["guest"]["vespene/drain"] = value
        return self.reply(200, "", entry={"value": value})

    def do_DELETE(self):
        if self.path.startswith("/_control/"):
            return self.control()
        return self.reply(405, "Method Not Allowed")


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--drain", default=None, help="initial value of vespene-drain (absent if not given)")
    p.add_argument("--no-guest-attributes", action="store_true")
    ARGS = p.parse_args()
    STATE["drain"] = ARGS.drain
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    with open(ARGS.port_file + ".tmp", "w") as fh:
        fh.write(str(srv.server_address[1]))
    os.replace(ARGS.port_file + ".tmp", ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
