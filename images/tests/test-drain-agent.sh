#!/usr/bin/env bash
# Tests images/scripts/vespene-drain-agent against fake metadata servers that speak the real
# wire format (fake_imds.py: IMDSv2 with session tokens; fake_gce_metadata.py: Metadata-Flavor,
# wait_for_change with ETags, guest attributes), a fake `manage.py worker` that takes builds from
# a queue file and records when it starts, claims, and exits, and a fake `aws` CLI that records
# its arguments (it stands in for the Auto Scaling API, which cannot run here).
#
# What must hold, asserted from the recorded timestamps: once the agent has seen a drain request
# it starts no worker; it acknowledges only after every worker has exited; on AWS it sends
# heartbeats while it waits; metadata failures (server down, hanging, expired token) keep the
# current state, are logged and never crash the agent; a GCE cancel resumes the workers (writing
# vespene/drain=running first when it had acknowledged). Also prints the measured time from the
# drain request to the acknowledgement (idle and busy instance); no assertion is timed.
#
# Offline: 127.0.0.1 only, free ports picked by the servers. Needs bash, curl, python3.
# Bounded: every wait has a deadline and every agent runs under `timeout`.

set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
AGENT="$(cd "$HERE/../scripts" && pwd)/vespene-drain-agent"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vespene-drain-test.XXXXXX")"
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	sleep 0.2
	rm -rf "$WORK"
}
trap cleanup EXIT

PASSES=0
FAILS=0
ok() {
	PASSES=$((PASSES + 1))
	printf 'ok %d - %s\n' "$((PASSES + FAILS))" "$1"
}
not_ok() {
	FAILS=$((FAILS + 1))
	printf 'not ok %d - %s\n' "$((PASSES + FAILS))" "$1"
	shift
	local l
	for l in "$@"; do printf '    %s\n' "$l"; done
}
# check NAME COMMAND...: ok when COMMAND succeeds; else not ok with the agent log's tail.
check() {
	local name="$1"
	shift
	if "$@"; then ok "$name"; else not_ok "$name" "${DIAG:-}" "agent log (tail):" "$(tail -n 15 "$S/agent.log" 2>/dev/null)"; fi
	DIAG=""
}
DIAG=""
MEASURED=()

for tool in curl python3 timeout; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "test-drain-agent.sh: $tool is required" >&2
		exit 1
	}
done

# --- fakes ----------------------------------------------------------------------------------------
mkdir -p "$WORK/vespene" "$WORK/bin"
cat >"$WORK/vespene/manage.py" <<'PY'
import fcntl, os, sys, time
# Stand-in for `manage.py worker`: takes the first build of FAKE_QUEUE ("NAME SECONDS" lines) and
# "runs" it, or idles FAKE_IDLE_SECONDS and exits (the idle pass); records every step.
events, queue, pid = os.environ["FAKE_EVENTS"], os.environ["FAKE_QUEUE"], os.getpid()
def rec(kind, detail):
    with open(events, "a") as fh:
        fh.write("%.3f %s %d %s\n" % (time.time(), kind, pid, detail))
# Like Vespene's worker, it registers once and keeps its id in a file (/etc/vespene/worker_id
# on an image): an instance that comes back from standby must serve as the same worker.
idf = os.environ.get("FAKE_WORKER_ID_FILE")
wid = "-"
if idf:
    if not os.path.exists(idf):
        with open(idf, "w") as fh:
            fh.write("%d\n" % (int(time.time() * 1000) % 1000000))
    wid = open(idf).read().strip()
rec("start", " ".join(sys.argv[1:]) + " ssh_agent=" + ("yes" if os.environ.get("SSH_AUTH_SOCK") else "no"))
if idf:
    rec("id", wid)
build = None
with open(queue + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        lines = [l for l in open(queue).read().splitlines() if l.strip()]
    except FileNotFoundError:
        lines = []
    if lines:
        build = lines[0]
        with open(queue, "w") as fh:
            fh.write("".join(l + "\n" for l in lines[1:]))
if build:
    name, seconds = build.split()
    rec("claim", name)
    time.sleep(float(seconds))
    rec("exit", "build " + name)
else:
    time.sleep(float(os.environ.get("FAKE_IDLE_SECONDS", "1")))
    rec("exit", "idle")
PY
cat >"$WORK/bin/aws" <<'PY'
#!/usr/bin/env python3
# Stand-in for the aws CLI: records its arguments; fails (exit 255, like a throttled call) the
# first FAKE_AWS_FAIL_COMPLETE complete-lifecycle-action calls.
import json, os, sys, time
log = os.environ["FAKE_AWS_LOG"]
failed = sum(1 for l in open(log) if '"fail": true' in l) if os.path.exists(log) else 0
fail = "complete-lifecycle-action" in sys.argv and failed < int(os.environ.get("FAKE_AWS_FAIL_COMPLETE", "0"))
with open(log, "a") as fh:
    fh.write(json.dumps({"t": round(time.time(), 3), "argv": sys.argv[1:], "fail": fail}) + "\n")
if fail:
    sys.stderr.write("An error occurred (Throttling) when calling the CompleteLifecycleAction operation: Rate exceeded\n")
    sys.exit(255)
PY
chmod 0755 "$WORK/bin/aws"

PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
SSH_AGENT_BIN=""
WANT_SSH=no
if [ -x /usr/bin/ssh-agent ]; then
	SSH_AGENT_BIN=/usr/bin/ssh-agent
	WANT_SSH=yes
fi

# --- helpers ----------------------------------------------------------------------------------------
# scenario NAME: a fresh directory $S for one agent run.
S=""
scenario() {
	S="$WORK/$1"
	mkdir -p "$S/log"
	: >"$S/events"
	: >"$S/queue"
	: >"$S/aws.jsonl"
	: >"$S/server.jsonl"
	PORT=0
	printf '\n# %s\n' "$1"
}

# start_server KIND [ARGS...]: fake_imds.py or fake_gce_metadata.py; sets SERVER_PID and PORT.
SERVER_PID=""
PORT=0
start_server() {
	local kind="$1"
	shift
	rm -f "$S/port"
	python3 "$HERE/$kind" --port "$PORT" --port-file "$S/port" --log "$S/server.jsonl" "$@" 2>>"$S/server.err" &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	for _ in $(seq 100); do
		[ -s "$S/port" ] && break
		sleep 0.1
	done
	[ -s "$S/port" ] || {
		echo "fake server $kind did not start: $(cat "$S/server.err")" >&2
		exit 1
	}
	PORT="$(cat "$S/port")"
}
stop_server() {
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
}
control() { # METHOD PATH [BODY]
	curl -sS --max-time 5 -X "$1" --data-binary "${3:-}" "http://127.0.0.1:$PORT$2" >/dev/null
}

# write_conf CLOUD [KEY=VALUE...]
write_conf() {
	local cloud="$1"
	shift
	{
		echo "# test configuration"
		echo "CLOUD=$cloud"
		echo "POOL=linux"
		echo "PYTHON=$PY"
		echo "VESPENE_DIR=$WORK/vespene"
		echo "SSH_AGENT=$SSH_AGENT_BIN"
		echo "WORKERS=1"
		echo "MAX_WAIT_MINUTES=5"
		echo "POLL_SECONDS=1"
		echo "HEARTBEAT_SECONDS=1"
		echo "METADATA_TIMEOUT=2"
		echo "BACKOFF_MAX_SECONDS=2"
		echo "AWS_CLI=$WORK/bin/aws"
		echo "LOG_DIR=$S/log"
		[ "$cloud" = none ] || echo "METADATA_URL=http://127.0.0.1:$PORT"
		local kv
		for kv in "$@"; do echo "$kv"; done
	} >"$S/agent.conf"
}

AGENT_PID=""
start_agent() { # [ENV=VALUE...]
	env FAKE_EVENTS="$S/events" FAKE_QUEUE="$S/queue" FAKE_AWS_LOG="$S/aws.jsonl" FAKE_IDLE_SECONDS=1 "$@" \
		timeout 120 bash "$AGENT" --config "$S/agent.conf" >"$S/agent.log" 2>&1 &
	AGENT_PID=$!
	PIDS+=("$AGENT_PID")
}
# stop_agent: TERM (timeout passes it to the whole process group, as systemd does to the
# unit's cgroup); the agent must exit 0 within 5 s, saying why.
stop_agent() {
	local rc=0 late=""
	kill -TERM "$AGENT_PID" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$AGENT_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$AGENT_PID" 2>/dev/null; then
		late="still running 5 s after SIGTERM: $(pgrep -a -P "$(pgrep -P "$AGENT_PID" | head -n1)" 2>/dev/null | tr '\n' ' ')"
		pkill -KILL -P "$AGENT_PID" 2>/dev/null || true
		kill -KILL "$AGENT_PID" 2>/dev/null || true
	fi
	wait "$AGENT_PID" 2>/dev/null || rc=$?
	if [ -z "$late" ] && [ "$rc" = 0 ] && grep -q "stopping on SIGTERM" "$S/agent.log"; then
		ok "$(basename "$S"): the agent stops cleanly on SIGTERM${1:+ ($1)}"
	else
		not_ok "$(basename "$S"): the agent stops cleanly on SIGTERM${1:+ ($1)}" "${late:-exit status $rc}" "$(tail -n 5 "$S/agent.log")"
	fi
}
alive() { kill -0 "$AGENT_PID" 2>/dev/null; }

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s; 1 when the deadline passes.
wait_for() {
	local deadline=$(($(date +%s) + $1))
	shift
	while ! "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

count_events() { awk -v k="$1" '$2 == k' "$S/events" | wc -l; }
event_time() { awk -v k="$1" -v d="$2" '$2 == k && index($0, d) { print $1; exit }' "$S/events"; }
last_event_time() { awk -v k="$1" '$2 == k { t = $1 } END { print t }' "$S/events"; }
starts_after() { awk -v t="$1" '$2 == "start" && $1 > t' "$S/events" | wc -l; }
has_events() { [ "$(count_events "$1")" -ge "$2" ]; }
agent_says() { grep -q -- "$1" "$S/agent.log"; }
now() { python3 -c 'import time; print("%.3f" % time.time())'; }
lt() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$1" "$2"; }
secs() { python3 -c 'import sys; print("%.1f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }
# When the agent logged its first line matching PATTERN (epoch seconds).
agent_time() {
	python3 - "$S/agent.log" "$1" <<'PY'
import datetime, re, sys
for line in open(sys.argv[1]):
    if re.search(sys.argv[2], line):
        ts = line.split(" ", 1)[0]
        print("%.3f" % datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp())
        break
PY
}
# aws_calls ACTION -> JSON lines of the fake aws log for that action.
aws_calls() { grep -F "\"$1\"" "$S/aws.jsonl" || true; }
aws_count() { aws_calls "$1" | grep -c . || true; }
aws_has() { [ "$(aws_count "$1")" -ge "$2" ]; }
# aws_time ACTION N (1-based; success only when OK is given)
aws_ok_time() { aws_calls "$1" | grep -F '"fail": false' | head -n1 | python3 -c 'import json, sys; print("%.3f" % json.loads(sys.stdin.readline())["t"])'; }
server_query() { # PYTHON-EXPRESSION over the list L of server log entries
	python3 - "$S/server.jsonl" "$1" <<'PY'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(eval(sys.argv[2]))
PY
}
guest_put_time() { # VALUE [AFTER]: time of the first PUT of vespene/drain=VALUE after AFTER
	server_query "min([e['t'] for e in L if e['method'] == 'PUT' and e['path'].endswith('guest-attributes/vespene/drain') and e.get('value') == '$1' and e['status'] == 200 and e['t'] > ${2:-0}] or [0])"
}
guest_put_count() { server_query "len([e for e in L if e['method'] == 'PUT' and e['path'].endswith('guest-attributes/vespene/drain') and e.get('value') == '$1'])"; }
guest_is() { [ "$(guest_put_count "$1")" -ge 1 ]; }

aws_args() { # ACTION -> the exact argument list the agent must pass
	printf '%s\n' "[\"autoscaling\", \"$1\", \"--region\", \"us-east-1\", \"--cli-connect-timeout\", \"10\", \"--cli-read-timeout\", \"30\", \"--auto-scaling-group-name\", \"vespene-linux\", \"--lifecycle-hook-name\", \"vespene-drain\", \"--instance-id\", \"i-0123456789abcdef0\"${2:+, $2}]"
}
# all_aws_args_are ACTION EXPECTED_JSON: every recorded call of ACTION has exactly these arguments.
all_aws_args_are() {
	aws_calls "$1" | python3 -c '
import json, sys
want = json.loads(sys.argv[1])
calls = [json.loads(l) for l in sys.stdin if l.strip()]
bad = [c["argv"] for c in calls if c["argv"] != want]
if not calls or bad:
    print("calls: %d, differing: %s" % (len(calls), bad[:2]))
    sys.exit(1)
' "$2"
}

WORKER_ARGV="worker linux --max-builds=1 --max-wait-minutes=5 ssh_agent=$WANT_SSH"
workers_ran_exact_command() {
	local bad
	bad="$(awk '$2 == "start"' "$S/events" | cut -d' ' -f4- | grep -vxF "$WORKER_ARGV" || true)"
	if [ -n "$bad" ] || [ "$(count_events start)" -lt 1 ]; then
		DIAG="starts: $(count_events start); unexpected: $bad"
		return 1
	fi
}

# --- 0. configuration errors are refused, naming the key --------------------------------------------
S="$WORK/config"
mkdir -p "$S"
refused() { # NAME MESSAGE CONF-LINES...
	local name="$1" msg="$2" out rc=0
	shift 2
	printf '%s\n' "$@" >"$S/bad.conf"
	out="$(timeout 10 bash "$AGENT" --config "$S/bad.conf" --check-config 2>&1)" || rc=$?
	if [ "$rc" = 2 ] && printf '%s' "$out" | grep -Fq -- "$msg"; then
		ok "config: $name is refused"
	else
		not_ok "config: $name is refused" "exit status $rc" "$out"
	fi
}
refused "an unknown cloud" "CLOUD=azure must be aws, gce or none" CLOUD=azure POOL=linux
refused "a missing pool" "POOL is not set" CLOUD=aws
refused "a pool with a space" "may only contain letters" CLOUD=aws "POOL=my pool"
refused "MAX_WAIT_MINUTES=-1 with a cloud" "impossible to drain" CLOUD=gce POOL=linux MAX_WAIT_MINUTES=-1
refused "zero workers" "WORKERS=0 must be a whole number from 1 to 64" CLOUD=aws POOL=linux WORKERS=0
refused "an unknown key" "unknown key 'POLL'" CLOUD=aws POOL=linux POLL=3
refused "a non-HTTP metadata URL" "must be an http:// URL" CLOUD=gce POOL=linux METADATA_URL=file:///etc/passwd
refused "a line that is not KEY=value" "line 2 is not KEY=value" CLOUD=aws "rm -rf /"
printf 'CLOUD=aws\nPOOL=linux\nWORKERS=3\nMAX_WAIT_MINUTES="7"\n' >"$S/good.conf"
out="$(bash "$AGENT" --config "$S/good.conf" --check-config)"
if printf '%s\n' "$out" | grep -qx 'WORKER_COMMAND=/usr/bin/ssh-agent /opt/vespene-venv/bin/python3 manage.py worker linux --max-builds=1 --max-wait-minutes=7' &&
	printf '%s\n' "$out" | grep -qx 'METADATA_URL=http://169.254.169.254' && printf '%s\n' "$out" | grep -qx 'WORKERS=3'; then
	ok "config: --check-config prints the resolved configuration and the exact worker command"
else
	not_ok "config: --check-config prints the resolved configuration and the exact worker command" "$out"
fi

# --- 1. CLOUD=none: the plain loop -------------------------------------------------------------------
scenario none-loop
write_conf none WORKERS=2
start_agent FAKE_IDLE_SECONDS=0.3
wait_for 20 has_events start 5 || true
check "none: two worker loops restart their worker after each exit" has_events start 5
check "none: every worker runs exactly 'manage.py $WORKER_ARGV'" workers_ran_exact_command
check "none: no metadata request and no aws call" test ! -s "$S/aws.jsonl"
check "none: worker output goes to LOG_DIR/worker_NN.log, the agent's lines to drain-agent.log" \
	test -f "$S/log/worker_01.log" -a -f "$S/log/worker_02.log" -a -s "$S/log/drain-agent.log"
stop_agent

# --- 2. AWS: drain while a build runs ----------------------------------------------------------------
scenario aws-busy
echo "b1 4" >"$S/queue"
start_server fake_imds.py
write_conf aws
start_agent
wait_for 20 has_events claim 1 || true
t_req="$(now)"
control PUT /_control/lifecycle-state Terminated
wait_for 30 aws_has complete-lifecycle-action 1 || true
t_exit="$(event_time exit "build b1")"
t_ack="$(aws_ok_time complete-lifecycle-action || echo 0)"
t_seen="$(agent_time 'drain requested')"
DIAG="b1 exit $t_exit, ack $t_ack"
check "aws busy: CompleteLifecycleAction only after the busy worker exited" lt "${t_exit:-9e99}" "$t_ack"
DIAG="$(aws_calls complete-lifecycle-action)"
check "aws busy: exactly one complete-lifecycle-action, with exactly the protocol's arguments" \
	all_aws_args_are complete-lifecycle-action "$(aws_args complete-lifecycle-action '"--lifecycle-action-result", "CONTINUE"')"
check "aws busy: heartbeats while waiting, each with exactly the protocol's arguments" \
	all_aws_args_are record-lifecycle-action-heartbeat "$(aws_args record-lifecycle-action-heartbeat)"
hb_first="$(aws_calls record-lifecycle-action-heartbeat | head -n1 | python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["t"])' 2>/dev/null || echo 0)"
hb_last="$(aws_calls record-lifecycle-action-heartbeat | tail -n1 | python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["t"])' 2>/dev/null || echo 0)"
DIAG="heartbeats: $(aws_count record-lifecycle-action-heartbeat), first $hb_first, last $hb_last, drain $t_req, ack $t_ack"
heartbeats_in_window() {
	[ "$(aws_count record-lifecycle-action-heartbeat)" -ge 2 ] && lt "$t_req" "$hb_first" && lt "$hb_last" "$t_ack"
}
check "aws busy: at least two heartbeats, all between the drain request and the ack" heartbeats_in_window
DIAG="starts after the request: $(starts_after "$t_req")"
check "aws busy: no worker started after the drain request" test "$(starts_after "$t_req")" = 0
check "aws busy: the worker ran exactly 'manage.py $WORKER_ARGV'" workers_ran_exact_command
check "aws busy: every IMDS GET carried a session token" test "$(server_query "len([e for e in L if e['method'] == 'GET' and not e['token']])")" = 0
MEASURED+=("aws, busy (4 s build, drain $(secs "$(event_time claim b1)" "$t_req") s into it): request->ack $(secs "$t_req" "$t_ack") s; request seen after $(secs "$t_req" "${t_seen:-$t_req}") s; worker exit->ack $(secs "${t_exit:-$t_ack}" "$t_ack") s")
# After the ack: no second ack, no worker; then back to InService (a warm pool returning it).
sleep 2
check "aws busy: acknowledged once, and still no worker while Terminated" test "$(aws_count complete-lifecycle-action)" = 1 -a "$(starts_after "$t_req")" = 0
t_back="$(now)"
control PUT /_control/lifecycle-state InService
wait_for 10 bash -c "awk -v t=$t_back '\$2 == \"start\" && \$1 > t' '$S/events' | grep -q ." || true
check "aws busy: InService again (warm pool) starts workers again" test "$(starts_after "$t_back")" -ge 1
stop_agent
stop_server

# --- 3. AWS: drain while idle (the worker's idle pass ends it) -----------------------------------------
scenario aws-idle
start_server fake_imds.py
write_conf aws
start_agent
wait_for 20 has_events exit 1 || true
t_req="$(now)"
control PUT /_control/lifecycle-state Terminated
wait_for 20 aws_has complete-lifecycle-action 1 || true
t_ack="$(aws_ok_time complete-lifecycle-action || echo 0)"
t_seen="$(agent_time 'drain requested')"
DIAG="last exit $(last_event_time exit), ack $t_ack"
check "aws idle: acknowledged after the last (idle) worker exited" lt "$(last_event_time exit)" "$t_ack"
DIAG="seen at $t_seen; starts after: $(starts_after "${t_seen:-0}")"
check "aws idle: no worker started once the agent saw the request" test -n "$t_seen" -a "$(starts_after "${t_seen:-0}")" = 0
MEASURED+=("aws, idle (1 s idle pass): request->ack $(secs "$t_req" "$t_ack") s; request seen after $(secs "$t_req" "${t_seen:-$t_req}") s")
stop_agent
stop_server

# --- 4. AWS: three workers, and a failing acknowledgement is retried ------------------------------------
scenario aws-three
printf 'b1 2\nb2 3\nb3 4\n' >"$S/queue"
start_server fake_imds.py
write_conf aws WORKERS=3
start_agent FAKE_AWS_FAIL_COMPLETE=1
wait_for 20 has_events claim 3 || true
t_req="$(now)"
control PUT /_control/lifecycle-state Terminated
wait_for 30 bash -c "grep -F '\"fail\": false' '$S/aws.jsonl' | grep -q complete-lifecycle-action" || true
t_ack="$(aws_ok_time complete-lifecycle-action || echo 0)"
DIAG="starts: $(count_events start)"
check "aws x3: three workers took the three builds, no other worker started" test "$(count_events start)" = 3 -a "$(count_events claim)" = 3
DIAG="last exit $(last_event_time exit), ack $t_ack"
check "aws x3: acknowledged only after all three exited" lt "$(last_event_time exit)" "$t_ack"
DIAG="$(aws_calls complete-lifecycle-action)"
check "aws x3: the throttled first complete-lifecycle-action was retried (2 calls, 1 failed, same arguments)" \
	bash -c "[ \"\$(grep -c complete-lifecycle-action '$S/aws.jsonl')\" = 2 ] && grep -q 'acknowledgement failed (aws autoscaling complete-lifecycle-action exited with status 255' '$S/agent.log'"
check "aws x3: both calls had exactly the protocol's arguments" \
	all_aws_args_are complete-lifecycle-action "$(aws_args complete-lifecycle-action '"--lifecycle-action-result", "CONTINUE"')"
stop_agent
stop_server

# --- 5. AWS: the metadata service hangs, then is down, then comes back with Terminated ------------------
scenario aws-down
start_server fake_imds.py
write_conf aws
start_agent FAKE_IDLE_SECONDS=0.5
wait_for 20 has_events start 1 || true
control PUT /_control/hang 30
wait_for 20 agent_says "metadata read failed: .*timed out" || true
check "aws down: a hanging IMDS request is cut by METADATA_TIMEOUT and logged; state kept" \
	agent_says "metadata read failed: .*timed out.*keeping state 'run'"
control PUT /_control/hang 0
stop_server
t_down="$(now)"
sleep 4
check "aws down: the agent survives the outage" alive
check "aws down: each failed read is logged, the state kept (no drain assumed)" agent_says "keeping state 'run' (no drain assumed"
DIAG="starts during the outage: $(starts_after "$t_down")"
check "aws down: workers keep running in the kept 'run' state" test "$(starts_after "$t_down")" -ge 1
check "aws down: nothing acknowledged while the signal is unknown" test ! -s "$S/aws.jsonl"
start_server fake_imds.py --state Terminated
wait_for 30 aws_has complete-lifecycle-action 1 || true
check "aws down: back up with Terminated, the agent fetches a new token and acknowledges" \
	bash -c "grep -q 'metadata readable again' '$S/agent.log' && grep -q complete-lifecycle-action '$S/aws.jsonl'"
stop_agent
stop_server

# --- 6. AWS: revoked session token -> 401 -> a new token -------------------------------------------------
scenario aws-token
start_server fake_imds.py
write_conf aws
start_agent
wait_for 20 has_events start 1 || true
control POST /_control/expire-tokens
wait_for 10 agent_says "IMDS answered 401" || true
tokens="$(server_query "len([e for e in L if e['path'] == '/latest/api/token' and e['status'] == 200])")"
u401="$(server_query "len([e for e in L if e['status'] == 401])")"
DIAG="token PUTs: $tokens, 401 answers: $u401"
check "aws token: a 401 makes the agent fetch a new token (2 tokens, 1 401) and go on" test "$tokens" = 2 -a "$u401" = 1
control PUT /_control/lifecycle-state Terminated
wait_for 20 aws_has complete-lifecycle-action 1 || true
check "aws token: draining works with the new token" aws_has complete-lifecycle-action 1
stop_agent
stop_server

# --- 7. AWS: no instance metadata tags -> no group name -> no ack, a clear message -------------------------
scenario aws-no-tags
start_server fake_imds.py --state Terminated --no-tags
write_conf aws
start_agent
wait_for 15 agent_says "instance_metadata_tags = enabled" || true
check "aws no tags: the acknowledgement fails naming instance_metadata_tags, no aws call, no worker" \
	bash -c "grep -q 'acknowledgement failed (GET /latest/meta-data/tags/instance/aws:autoscaling:groupName answered HTTP 404 (the launch template must set metadata_options instance_metadata_tags = enabled)' '$S/agent.log' && [ ! -s '$S/aws.jsonl' ] && [ ! -s '$S/events' ]"
stop_agent
stop_server

# --- 8. GCE: drain while a build runs, then cancel after the ack ----------------------------------------
scenario gce-busy
echo "b1 4" >"$S/queue"
start_server fake_gce_metadata.py
write_conf gce
start_agent
wait_for 20 has_events claim 1 || true
t_first="$(event_time start worker)"
DIAG="running written $(guest_put_time running), first start $t_first"
check "gce busy: vespene/drain=running is written before the first worker starts" lt "$(guest_put_time running)" "${t_first:-0}"
t_req="$(now)"
control PUT /_control/drain requested
wait_for 30 guest_is "done" || true
t_exit="$(event_time exit "build b1")"
t_ack="$(guest_put_time "done")"
t_seen="$(agent_time 'drain requested')"
DIAG="b1 exit $t_exit, done $t_ack"
check "gce busy: vespene/drain=done only after the busy worker exited" lt "${t_exit:-9e99}" "$t_ack"
check "gce busy: no worker started after the drain request" test "$(starts_after "$t_req")" = 0
check "gce busy: every metadata request carried Metadata-Flavor: Google" \
	test "$(server_query "len([e for e in L if not e.get('control') and not e['flavor']])")" = 0
check "gce busy: the agent waits with wait_for_change=true and last_etag" \
	test "$(server_query "len([e for e in L if 'wait_for_change=true' in e['path'] and 'last_etag=' in e['path']])")" -ge 1
MEASURED+=("gce, busy (4 s build, drain $(secs "$(event_time claim b1)" "$t_req") s into it): request->ack $(secs "$t_req" "$t_ack") s; request seen after $(secs "$t_req" "${t_seen:-$t_req}") s; worker exit->ack $(secs "${t_exit:-$t_ack}" "$t_ack") s")
t_cancel="$(now)"
control DELETE /_control/drain
wait_for 10 bash -c "awk -v t=$t_cancel '\$2 == \"start\" && \$1 > t' '$S/events' | grep -q ." || true
t_resume="$(awk -v t="$t_cancel" '$2 == "start" && $1 > t { print $1; exit }' "$S/events")"
t_running="$(guest_put_time running "$t_cancel")"
DIAG="cancel $t_cancel, running written $t_running, next start $t_resume"
check "gce cancel after ack: vespene/drain=running is written, then workers resume" \
	bash -c "python3 -c 'import sys; a, b, c = map(float, sys.argv[1:]); sys.exit(0 if a < b < c else 1)' $t_cancel ${t_running:-0} ${t_resume:-0}"
check "gce cancel after ack: logged as a cancel after the acknowledgement" agent_says "drain cancelled after the acknowledgement"
stop_agent
stop_server

# --- 9. GCE: drain while idle -------------------------------------------------------------------------------
scenario gce-idle
start_server fake_gce_metadata.py
write_conf gce
start_agent
wait_for 20 has_events exit 1 || true
t_req="$(now)"
control PUT /_control/drain requested
wait_for 20 guest_is "done" || true
t_ack="$(guest_put_time "done")"
t_seen="$(agent_time 'drain requested')"
DIAG="last exit $(last_event_time exit), done $t_ack"
check "gce idle: acknowledged after the last (idle) worker exited" lt "$(last_event_time exit)" "$t_ack"
check "gce idle: no worker started once the agent saw the request" test -n "$t_seen" -a "$(starts_after "${t_seen:-0}")" = 0
MEASURED+=("gce, idle (1 s idle pass): request->ack $(secs "$t_req" "$t_ack") s; request seen after $(secs "$t_req" "${t_seen:-$t_req}") s")
stop_agent
stop_server

# --- 10. GCE: cancel before the ack ---------------------------------------------------------------------------
scenario gce-cancel
echo "b1 4" >"$S/queue"
start_server fake_gce_metadata.py
write_conf gce
start_agent
wait_for 20 has_events claim 1 || true
control PUT /_control/drain requested
wait_for 10 agent_says "drain requested" || true
control PUT /_control/drain no
wait_for 20 bash -c "awk '\$2 == \"start\"' '$S/events' | wc -l | grep -qx 2" || true
t_exit="$(event_time exit "build b1")"
t_resume="$(awk -v t="${t_exit:-0}" '$2 == "start" && $1 > t { print $1; exit }' "$S/events")"
check "gce cancel before ack: a value other than 'requested' resumes; a worker starts after the build" test -n "$t_resume"
check "gce cancel before ack: vespene/drain=done was never written" test "$(guest_put_count "done")" = 0
check "gce cancel before ack: logged as a cancel before the acknowledgement" agent_says "drain cancelled before the acknowledgement"
stop_agent
stop_server

# --- 11. GCE: guest attributes disabled -> no worker (a stale 'done' could not be overwritten) ---------------
scenario gce-no-guest
start_server fake_gce_metadata.py --no-guest-attributes
write_conf gce
start_agent
wait_for 15 agent_says "cannot write the guest attribute" || true
sleep 2
check "gce no guest attributes: no worker starts, and the log names enable-guest-attributes" \
	bash -c "[ ! -s '$S/events' ] && grep -q 'enable-guest-attributes=TRUE' '$S/agent.log'"
stop_agent
stop_server

# --- 12. GCE: metadata server down, back with 'requested' -----------------------------------------------------
scenario gce-down
start_server fake_gce_metadata.py
write_conf gce
start_agent FAKE_IDLE_SECONDS=0.5
wait_for 20 has_events start 1 || true
stop_server
sleep 3
check "gce down: the agent survives, logs, keeps 'run'" \
	bash -c "kill -0 $AGENT_PID && grep -q \"metadata read failed: GET attributes/vespene-drain failed: .*keeping state 'run'\" '$S/agent.log'"
start_server fake_gce_metadata.py --drain requested
wait_for 30 guest_is "done" || true
check "gce down: back with vespene-drain=requested, the agent drains and acknowledges" guest_is "done"
stop_agent
stop_server

# --- 13. SIGTERM at any moment ends the agent promptly --------------------------------------------------
# A signal to the process group also kills whatever subshell the agent is in at that moment; the
# agent must neither hang nor compute a wild sleep from it. Several runs, TERM at varied moments,
# with acknowledgements failing fast (the busiest loop).
for delay in 0.3 0.7 1.1 1.6 2.2; do
	scenario "term-$delay"
	start_server fake_imds.py --state Terminated --no-tags
	write_conf aws
	start_agent
	sleep "$delay"
	stop_agent "TERM after ${delay}s"
	stop_server
done

# --- 14. Standby: a drained instance suspended or stopped, then brought back ----------------------------
# The executors keep drained instances in standby (GCE suspend/stop, AWS warm pools; see
# docs/gce-mig.md and docs/aws-asg.md). Suspended or hibernated, the agent's processes are frozen
# mid-call and thawed as they were (SIGSTOP/SIGCONT here); stopped, the instance boots again and
# the agent starts afresh. Either way it must serve again, as the same worker (worker_id kept on
# disk), and never while the drain signal still stands.
ids_seen() { awk '$2 == "id" { print "worker_id=" $4 }' "$S/events" | sort -u; }
# freeze / thaw: the agent and everything under it (a metadata request in flight, workers),
# stopped and continued as a suspend and a resume do to a whole VM.
tree_pids() {
	local p
	for p in $(pgrep -P "$1"); do
		echo "$p"
		tree_pids "$p"
	done
}
freeze() {
	local _ p
	for _ in 1 2; do for p in $(tree_pids "$AGENT_PID"); do kill -STOP "$p" 2>/dev/null || true; done; done
}
thaw() {
	local p
	for p in $(tree_pids "$AGENT_PID"); do kill -CONT "$p" 2>/dev/null || true; done
}

scenario gce-suspend
start_server fake_gce_metadata.py
write_conf gce
start_agent FAKE_WORKER_ID_FILE="$S/worker_id"
wait_for 20 has_events exit 1 || true
control PUT /_control/drain requested
wait_for 20 guest_is "done" || true
check "gce suspend: drained and acknowledged before the suspend" guest_is "done"
freeze
sleep 2 # suspended, a wait_for_change request in flight
t_frozen="$(now)"
check "gce suspend: nothing starts while suspended" test "$(starts_after "$t_frozen")" = 0
control DELETE /_control/drain # the executor calls the drain off, then resumes
t_resume="$(now)"
thaw
wait_for 20 bash -c "awk -v t=$t_resume '\$2 == \"start\" && \$1 > t' '$S/events' | grep -q ." || true
t_start="$(awk -v t="$t_resume" '$2 == "start" && $1 > t { print $1; exit }' "$S/events")"
t_running="$(guest_put_time running "$t_resume")"
DIAG="resume $t_resume, running written ${t_running:-never}, first start ${t_start:-never}, ids $(ids_seen | tr '\n' ' ')"
check "gce suspend: after the resume vespene/drain=running is written, then a worker starts" \
	bash -c "python3 -c 'import sys; a, b, c = map(float, sys.argv[1:]); sys.exit(0 if a < b < c else 1)' $t_resume ${t_running:-0} ${t_start:-0}"
check "gce suspend: the resumed worker is the same worker (one worker_id)" test "$(ids_seen | wc -l)" = 1
MEASURED+=("gce, suspended then resumed: resume->first worker $(secs "$t_resume" "${t_start:-$t_resume}") s")
stop_agent
stop_server

scenario aws-warm-hibernated
start_server fake_imds.py
write_conf aws
start_agent FAKE_WORKER_ID_FILE="$S/worker_id"
wait_for 20 has_events exit 1 || true
control PUT /_control/lifecycle-state Warmed:Hibernated
wait_for 20 aws_has complete-lifecycle-action 1 || true
check "aws warm pool (hibernate): drained and acknowledged on Warmed:Hibernated" aws_has complete-lifecycle-action 1
freeze
sleep 2
control PUT /_control/lifecycle-state InService # drawn from the warm pool
t_resume="$(now)"
thaw
wait_for 20 bash -c "awk -v t=$t_resume '\$2 == \"start\" && \$1 > t' '$S/events' | grep -q ." || true
t_start="$(awk -v t="$t_resume" '$2 == "start" && $1 > t { print $1; exit }' "$S/events")"
DIAG="resume $t_resume, first start ${t_start:-never}, ids $(ids_seen | tr '\n' ' ')"
check "aws warm pool (hibernate): back InService, a worker starts again" test -n "$t_start"
check "aws warm pool (hibernate): the same worker (one worker_id)" test "$(ids_seen | wc -l)" = 1
check "aws warm pool (hibernate): logged as a drain that ended" agent_says "drain cancelled after the acknowledgement"
MEASURED+=("aws, hibernated then drawn from the warm pool: InService->first worker $(secs "$t_resume" "${t_start:-$t_resume}") s")
stop_agent
stop_server

# Stopped: the instance powers off (systemd stops the unit: SIGTERM) and boots again later.
S_KEEP="$S"
scenario aws-warm-stopped
cp "$S_KEEP/worker_id" "$S/worker_id"
start_server fake_imds.py --state Warmed:Stopped
write_conf aws
start_agent FAKE_WORKER_ID_FILE="$S/worker_id"
wait_for 10 agent_says "drain requested" || true
check "aws warm pool (stop): a boot while still Warmed:* starts no worker" test "$(count_events start)" = 0
stop_agent "the instance stops"
control PUT /_control/lifecycle-state InService
t_boot="$(now)"
start_agent FAKE_WORKER_ID_FILE="$S/worker_id"
wait_for 20 has_events start 1 || true
DIAG="ids before $(cat "$S_KEEP/worker_id"), now $(ids_seen | tr '\n' ' ')"
check "aws warm pool (stop): booted InService, the worker starts as the same worker" \
	test "$(ids_seen)" = "worker_id=$(cat "$S_KEEP/worker_id")"
MEASURED+=("aws, stopped then started: agent start->first worker $(secs "$t_boot" "$(event_time start worker)") s")
stop_agent
stop_server

printf '\nmeasured (POLL_SECONDS=1; fake worker idle pass 1 s):\n'
for m in "${MEASURED[@]}"; do printf '  %s\n' "$m"; done
printf '\n%d passed, %d failed\n' "$PASSES" "$FAILS"
[ "$FAILS" -eq 0 ]
