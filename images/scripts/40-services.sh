#!/usr/bin/env bash
# Step 40 (points 5, 6, 7 and 9): the worker service started at boot (the drain agent running
# one or several worker loops; or, with drain_agent = off, one worker or several under
# supervisor), the boot-time database check it depends on, log shipping, no web interface,
# the checklist script itself, and the manifest describing what this image was baked for.
STEP_NAME=services
# shellcheck source=lib.sh
. "${VESPENE_IMAGE_SRC:-$(dirname "$0")}/lib.sh"
require_root_or_root_mode
validate_pool
require_var VESPENE_LOG_TARGET log_target
src="$(image_src)"

workers="${VESPENE_WORKERS_PER_INSTANCE:-1}"
max_builds="${VESPENE_MAX_BUILDS:-1}"
max_wait="${VESPENE_MAX_WAIT_MINUTES:-5}"
when_done="${VESPENE_WHEN_WORKERS_EXIT:-none}"
db_timeout="${VESPENE_DB_CHECK_TIMEOUT:-300}"
on_db_fail="${VESPENE_ON_DB_UNREACHABLE:-none}"
worker_cmd="/usr/bin/ssh-agent $PYTHON manage.py worker $VESPENE_POOL --max-builds=$max_builds --max-wait-minutes=$max_wait"
drain="$(drain_cloud)" || exit 1
drain_poll="${VESPENE_DRAIN_POLL_SECONDS:-5}"
drain_heartbeat="${VESPENE_DRAIN_HEARTBEAT_SECONDS:-600}"
drain_hook="${VESPENE_DRAIN_HOOK_NAME:-vespene-drain}"

# --- the checklist, installed so it can run on any instance (and at boot for point 6) ------------
mkdirp "$LIB_DIR"
mkdirp "$(dirname "$CHECK_BIN")"
install -m 0755 "$src/check-image.sh" "$ROOT$CHECK_BIN"
install -m 0755 "$src/exit-when-all-exited.py" "$ROOT$LIB_DIR/exit-when-all-exited.py"
# The drain agent (scale-in without killing a build, docs/scale-in.md); installed even with
# drain_agent = off so that an operator can switch an instance over by hand.
install -m 0755 "$src/vespene-drain-agent" "$ROOT$DRAIN_AGENT_BIN"

# --- point 7: /var/log/vespene -----------------------------------------------------------------
mkdirp "$LOG_DIR"
chmod 0750 "$ROOT$LOG_DIR"
own "$APP_USER:adm" "$ROOT$LOG_DIR"
write_file 0644 /etc/logrotate.d/vespene-image <<END
# Written by images/scripts/40-services.sh (point 7).
$LOG_DIR/*.log {
    weekly
    rotate 4
    missingok
    notifempty
    compress
    delaycompress
    copytruncate
}
END

proto="${VESPENE_LOG_TARGET%%://*}"
hostport="${VESPENE_LOG_TARGET#*://}"
log_host="${hostport%:*}"
log_port="${hostport##*:}"
write_file 0644 "$RSYSLOG_CONF" <<END
# Written by images/scripts/40-services.sh (point 7): ship $LOG_DIR/*.log (workers, supervisor,
# the boot-time database check) to $VESPENE_LOG_TARGET. Instances are ephemeral: a log that only
# lives on the instance is gone with it.
module(load="imfile")
input(type="imfile" File="$LOG_DIR/*.log" Tag="vespene:" addMetadata="on" ruleset="vespene_forward")
ruleset(name="vespene_forward") {
    action(type="omfwd" Target="$log_host" Port="$log_port" Protocol="$proto"
           Template="RSYSLOG_SyslogProtocol23Format"
           queue.type="LinkedList" queue.filename="vespene_forward" queue.saveOnShutdown="on"
           action.resumeRetryCount="-1")
}
END

# --- point 6: the database is reachable before any worker starts --------------------------------
write_file 0644 "$UNIT_DIR/$DBCHECK_UNIT" <<END
# Written by images/scripts/40-services.sh (point 6).
[Unit]
Description=Vespene image point 6: the Vespene database is reachable from this instance
Wants=network-online.target
After=network-online.target
Before=$WORKER_UNIT
FailureAction=$on_db_fail

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$CHECK_BIN --point 6 --live-db --wait $db_timeout
StandardOutput=append:$LOG_DIR/db-check.log
StandardError=inherit
TimeoutStartSec=$((db_timeout + 60))

[Install]
WantedBy=multi-user.target
END

# --- point 5: the worker service -------------------------------------------------------------
# No restart: a worker that exits (--max-builds reached, --max-wait-minutes idle) is done, and
# the instance can be reclaimed; when_workers_exit=poweroff makes the instance stop itself.
if [ "$drain" != off ]; then
	# The drain agent runs the worker one build at a time, $workers loop(s) side by side, and
	# stops starting workers once the cloud asks for the instance (no supervisord needed).
	exec_start="$DRAIN_AGENT_BIN"
	output="StandardOutput=journal"
	extra="RuntimeDirectory=vespene-drain-agent
SyslogIdentifier=vespene-drain-agent"
	rm -f "$ROOT$SUPERVISOR_CONF"
	write_file 0644 "$DRAIN_AGENT_CONF" <<END
# Written by images/scripts/40-services.sh (point 5): read by $DRAIN_AGENT_BIN, which
# vespene-worker.service runs. Shell KEY=value lines; see docs/scale-in.md.
# CLOUD: where the removal signal comes from (aws: IMDSv2 target-lifecycle-state, gce: the
# metadata key vespene-drain, none: no signal, the plain loop).
CLOUD=$drain
POOL=$VESPENE_POOL
PYTHON=$PYTHON
VESPENE_DIR=$VESPENE_DIR
SSH_AGENT=/usr/bin/ssh-agent
# Workers on this instance; tell the autoscaler with workers_per_instance = $workers.
WORKERS=$workers
MAX_WAIT_MINUTES=$max_wait
POLL_SECONDS=$drain_poll
HEARTBEAT_SECONDS=$drain_heartbeat
HOOK_NAME=$drain_hook
AWS_CLI=/usr/bin/aws
LOG_DIR=$LOG_DIR
END
elif [ "$workers" = 1 ]; then
	rm -f "$ROOT$DRAIN_AGENT_CONF"
	exec_start="$worker_cmd"
	output="StandardOutput=append:$LOG_DIR/worker.log"
	extra=""
	rm -f "$ROOT$SUPERVISOR_CONF"
else
	rm -f "$ROOT$DRAIN_AGENT_CONF"
	# Several workers: supervisor runs N copies of the same command, never restarts them, and an
	# event listener shuts supervisor down once every copy has exited.
	exec_start="/usr/bin/supervisord -n -c $SUPERVISOR_CONF"
	output="StandardOutput=journal"
	extra="RuntimeDirectory=vespene"
	write_file 0644 "$SUPERVISOR_CONF" <<END
; Written by images/scripts/40-services.sh (point 5): $workers workers for pool $VESPENE_POOL.
; Tell the autoscaler with workers_per_instance = $workers in its executor section; do not raise
; the pool's multiplier (that multiplies the instance count, not the workers per instance).
[supervisord]
nodaemon=true
logfile=$LOG_DIR/supervisord.log
logfile_maxbytes=50MB
logfile_backups=5
pidfile=/run/vespene/supervisord.pid
childlogdir=$LOG_DIR

[unix_http_server]
file=/run/vespene/supervisor.sock
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix:///run/vespene/supervisor.sock

[program:worker]
command=$worker_cmd
process_name=%(program_name)s_%(process_num)02d
numprocs=$workers
directory=$VESPENE_DIR
autostart=true
autorestart=false
startsecs=0
startretries=0
redirect_stderr=true
stdout_logfile=$LOG_DIR/%(program_name)s_%(process_num)02d.log
stdout_logfile_maxbytes=50MB
stopwaitsecs=60

[eventlistener:exit_when_all_exited]
command=/usr/bin/python3 $LIB_DIR/exit-when-all-exited.py worker
events=PROCESS_STATE_EXITED,PROCESS_STATE_FATAL,PROCESS_STATE_STOPPED,TICK_60
autorestart=true
stderr_logfile=$LOG_DIR/exit_when_all_exited.log
END
fi

write_file 0644 "$UNIT_DIR/$WORKER_UNIT" <<END
# Written by images/scripts/40-services.sh (point 5): $workers worker(s) for pool $VESPENE_POOL.
[Unit]
Description=Vespene worker(s) for pool $VESPENE_POOL
Requires=$DBCHECK_UNIT
After=$DBCHECK_UNIT network-online.target remote-fs.target
Wants=network-online.target
SuccessAction=$when_done
FailureAction=$when_done

[Service]
Type=simple
User=$APP_USER
Group=$APP_USER
WorkingDirectory=$VESPENE_DIR
Environment=HOME=$APP_HOME PYTHONUNBUFFERED=1
ExecStart=$exec_start
$output
StandardError=inherit
$extra
Restart=no

[Install]
WantedBy=multi-user.target
END

enable_unit "$DBCHECK_UNIT"
enable_unit "$WORKER_UNIT"

# --- point 9: no web interface ------------------------------------------------------------------
# Vespene's setup scripts install vespene.service (supervisord with gunicorn and workers); mask
# it so nothing can start the web interface on a worker.
mask_unit vespene.service

# --- the manifest -------------------------------------------------------------------------------
commit="$(git -C "$ROOT$VESPENE_DIR" rev-parse HEAD 2>/dev/null || true)"
publish_b64="${VESPENE_PUBLISH_COMMAND_B64:-}"
if [ -z "$publish_b64" ] && [ -n "${VESPENE_PUBLISH_COMMAND:-}" ]; then
	publish_b64="$(printf '%s' "$VESPENE_PUBLISH_COMMAND" | base64 -w0)"
fi
write_file 0640 "$MANIFEST" <<END
# Written by images/scripts/40-services.sh: what this image was baked for (no secrets).
# vespene-image-check compares the instance with these values when they are not in its
# environment.
VESPENE_POOL=$VESPENE_POOL
VESPENE_VERSION=${VESPENE_VERSION:-}
VESPENE_COMMIT=$commit
VESPENE_BUILD_ROOT=${VESPENE_BUILD_ROOT:-}
VESPENE_SUDO_USER=${VESPENE_SUDO_USER:-}
VESPENE_WORKERS_PER_INSTANCE=$workers
VESPENE_MAX_BUILDS=$max_builds
VESPENE_MAX_WAIT_MINUTES=$max_wait
VESPENE_WHEN_WORKERS_EXIT=$when_done
VESPENE_DRAIN_AGENT=$drain
VESPENE_DRAIN_POLL_SECONDS=$drain_poll
VESPENE_DRAIN_HEARTBEAT_SECONDS=$drain_heartbeat
VESPENE_DRAIN_HOOK_NAME=$drain_hook
VESPENE_ON_DB_UNREACHABLE=$on_db_fail
VESPENE_DB_CHECK_TIMEOUT=$db_timeout
VESPENE_LOG_TARGET=$VESPENE_LOG_TARGET
VESPENE_PUBLISH_COMMAND_B64=$publish_b64
VESPENE_BUILDROOT_MOUNT_SOURCE=${VESPENE_BUILDROOT_MOUNT_SOURCE:-}
VESPENE_BUILD_TOOLS=${VESPENE_BUILD_TOOLS:-}
VESPENE_EXTRA_PACKAGES=${VESPENE_EXTRA_PACKAGES:-}
END
own "root:$APP_USER" "$ROOT$MANIFEST"

if [ "$drain" != off ]; then
	log "worker service: $DRAIN_AGENT_BIN (CLOUD=$drain), $workers loop(s) of '/usr/bin/ssh-agent $PYTHON manage.py worker $VESPENE_POOL --max-builds=1 --max-wait-minutes=$max_wait'"
else
	log "worker service: $workers x '$worker_cmd' (no drain agent)"
fi
