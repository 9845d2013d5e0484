#!/usr/bin/env python3
"""A fake EC2 instance metadata service (IMDSv2 only) for images/tests/test-drain-agent.sh.

Speaks the wire format the drain agent relies on:
  PUT /latest/api/token            needs X-aws-ec2-metadata-token-ttl-seconds (1..21600), else
                                   400; answers a session token valid for that many seconds
  GET /latest/meta-data/...        needs a valid X-aws-ec2-metadata-token, else 401 (IMDSv2
                                   with http_tokens = required); unknown paths 404
      autoscaling/target-lifecycle-state   switchable by the test
      tags/instance/aws:autoscaling:groupName (404 with --no-tags: instance metadata tags off)
      instance-id, placement/region
Control endpoints for the test (no token): PUT /_control/lifecycle-state (body: the new state),
POST /_control/expire-tokens (revokes every token issued so far), PUT /_control/hang (body:
seconds every metadata request sleeps before answering; 0 stops it).
Every request is appended to --log as one JSON line: t, method, path, status, token (whether a
token header was sent), value (for state changes). Binds 127.0.0.1 only; --port 0 picks a free
port, written to --port-file once listening.
"""

import argparse
import json
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"lifecycle": "InService", "tokens": {}, "hang": 0.0}
ARGS = None


def record(entry):
    entry["t"] = round(time.time(), 3)
    with LOCK:
        with open(ARGS.log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):  # the JSON log is enough
        pass

    def reply(self, status, body="", entry=None):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        e = {"method": self.command, "path": self.path, "status": status,
             "token": bool(self.headers.get("X-aws-ec2-metadata-token"))}
        e.update(entry or {})
        record(e)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode() if n else ""

    def do_PUT(self):
        if self.path == "/_control/lifecycle-state":
            value = self.body().strip()
            with LOCK:
                STATE["lifecycle"] = value
            return self.reply(200, "ok", {"value": value, "control": True})
        if self.path == "/_control/hang":
            value = float(self.body().strip() or 0)
            with LOCK:
                STATE["hang"] = value
            return self.reply(200, "ok", {"value": value, "control": True})
        if self.path != "/latest/api/token":
            return self.reply(404, "Not Found")
        self.hang()
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self.reply(400, "Bad Request")
        token = "AQAEA" + secrets.token_urlsafe(24)
        with LOCK:
            STATE["tokens"][token] = time.time() + int(ttl)
        return self.reply(200, token)

    def do_POST(self):
        if self.path == "/_control/expire-tokens":
            with LOCK:
                STATE["tokens"].clear()
            return self.reply(200, "ok", {"control": True})
        return self.reply(405, "Method Not Allowed")

    def hang(self):
        with LOCK:
            h = STATE["hang"]
        if h > 0:
            time.sleep(h)

    def do_GET(self):
        if not self.path.startswith("/latest/meta-data/"):
            return self.reply(404, "Not Found")
        self.hang()
        token = self.headers.get("X-aws-ec2-metadata-token", "")
        with LOCK:
            exp = STATE["tokens"].get(token)
            lifecycle = STATE["lifecycle"]
        if exp is None or exp < time.time():
            return self.reply(401, "Unauthorized")
        item = self.path[len("/latest/meta-data/"):]
        values = {
            "autoscaling/target-lifecycle-state": lifecycle,
            "instance-id": ARGS.instance_id,
            "placement/region": ARGS.region,
        }
        if not ARGS.no_tags:
            values["tags/instance/aws:autoscaling:groupName"] = ARGS.group
        if item not in values or values[item] is None:
            return self.reply(404, "Not Found")
        return self.reply(200, values[item])


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--state", default="InService")
    p.add_argument("--group", default="vespene-linux")
    p.add_argument("--instance-id", default="i-0123456789abcdef0")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--no-tags", action="store_true")
    ARGS = p.parse_args()
    STATE["lifecycle"] = ARGS.state
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    with open(ARGS.port_file + ".tmp", "w") as fh:
        fh.write(str(srv.server_address[1]))
    os.replace(ARGS.port_file + ".tmp", ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
