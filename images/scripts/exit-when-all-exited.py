#!/usr/bin/env python3
"""Supervisor event listener: shut supervisord down once every worker process has exited.

Why: workers run with --max-builds / --max-wait-minutes and must not be restarted
(autorestart=false), so once all of them are gone the instance does nothing. Stopping supervisord
then ends vespene-worker.service, which lets systemd power the instance off
(when_workers_exit=poweroff) or lets an operator see at a glance that the instance is idle.

Usage (from the supervisor config): exit-when-all-exited.py GROUP [GROUP...]
Listens to PROCESS_STATE_EXITED, PROCESS_STATE_FATAL, PROCESS_STATE_STOPPED and TICK_60; on each
event asks supervisord (XML-RPC over its unix socket) for the state of every process in the named
groups. Stateless, so a restarted listener is as good as the first one.
"""

import os
import sys

from supervisor import childutils

DONE_STATES = {"STOPPED", "EXITED", "FATAL"}


def log(msg):
    # stdout is the event protocol channel: diagnostics go to stderr (the listener's log file).
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def all_exited(rpc, groups):
    procs = [p for p in rpc.supervisor.getAllProcessInfo() if p["group"] in groups]
    if not procs:
        return False
    running = [p["name"] for p in procs if p["statename"] not in DONE_STATES]
    return not running


def main():
    groups = set(sys.argv[1:])
    if not groups:
        log("usage: exit-when-all-exited.py GROUP [GROUP...]")
        return 2
    rpc = childutils.getRPCInterface(os.environ)
    while True:
        headers, _payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            if all_exited(rpc, groups):
                log("every process of %s has exited: shutting supervisord down" % ", ".join(sorted(groups)))
                childutils.listener.ok(sys.stdout)
                rpc.supervisor.shutdown()
                continue
        except Exception as exc:  # keep listening; the next event retries
            log("could not query supervisord after %s: %s" % (headers.get("eventname"), exc))
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
