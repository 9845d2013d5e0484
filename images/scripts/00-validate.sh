#!/usr/bin/env bash
# Step 00: refuse to bake from inconsistent variables, before any minute is spent on a machine.
# Every message names the variable (and its Packer name) and never prints a secret's value.
STEP_NAME=validate
# shellcheck source=lib.sh
. "${VESPENE_IMAGE_SRC:-$(dirname "$0")}/lib.sh"
require_root_or_root_mode

validate_pool
require_var VESPENE_VERSION vespene_version
require_var VESPENE_SOURCE vespene_source
require_var VESPENE_BUILD_ROOT build_root
require_var VESPENE_SUDO_USER sudo_user
require_var VESPENE_DB_HOST db_host
require_var VESPENE_DB_NAME db_name
require_var VESPENE_DB_USER db_user
require_var VESPENE_DB_PASSWORD db_password
require_var VESPENE_DJANGO_SECRET_KEY django_secret_key
require_var VESPENE_SYMMETRIC_SECRET_KEY symmetric_secret_key
require_var VESPENE_LOG_TARGET log_target

# Point 1: a version is a git ref (tag, branch or commit), checked out detached.
case "$VESPENE_VERSION" in
-* | *[!A-Za-z0-9._/-]*) die "VESPENE_VERSION (Packer variable vespene_version) '$VESPENE_VERSION' is not a git tag, branch or commit" ;;
esac

# Point 3: the build root must survive a reboot; Debian empties /tmp at boot.
case "$VESPENE_BUILD_ROOT" in
/*) ;;
*) die "VESPENE_BUILD_ROOT (Packer variable build_root) '$VESPENE_BUILD_ROOT' must be an absolute path" ;;
esac
case "$VESPENE_BUILD_ROOT/" in
/tmp/* | /var/tmp/* | /run/* | /dev/* | /proc/* | /sys/* | /) die "VESPENE_BUILD_ROOT (Packer variable build_root) '$VESPENE_BUILD_ROOT' is cleared at boot or is not a disk path; use e.g. /srv/vespene/buildroot" ;;
*[!A-Za-z0-9._/-]*) die "VESPENE_BUILD_ROOT (Packer variable build_root) '$VESPENE_BUILD_ROOT' may only contain letters, digits, '.', '_', '-' and '/'" ;;
esac

# Point 4: the sudo user is a plain login name; root would defeat Vespene's sudo isolation.
case "$VESPENE_SUDO_USER" in
root) die "VESPENE_SUDO_USER (Packer variable sudo_user) must not be root: builds would run as root" ;;
"$APP_USER") die "VESPENE_SUDO_USER (Packer variable sudo_user) must not be $APP_USER: builds could read the database password" ;;
-* | *[!a-z0-9_-]*) die "VESPENE_SUDO_USER (Packer variable sudo_user) '$VESPENE_SUDO_USER' is not a valid user name (lower-case letters, digits, '_', '-')" ;;
esac

# Point 5: the worker command line numbers.
case "${VESPENE_WORKERS_PER_INSTANCE:-}" in
'' | *[!0-9]* | 0) die "VESPENE_WORKERS_PER_INSTANCE (Packer variable workers_per_instance) must be a whole number >= 1, got '${VESPENE_WORKERS_PER_INSTANCE:-}'" ;;
esac
require_uint VESPENE_MAX_BUILDS max_builds 1
require_uint VESPENE_MAX_WAIT_MINUTES max_wait_minutes 1
case "${VESPENE_WHEN_WORKERS_EXIT:-none}" in
none | poweroff) ;;
*) die "VESPENE_WHEN_WORKERS_EXIT (Packer variable when_workers_exit) must be 'none' or 'poweroff', got '$VESPENE_WHEN_WORKERS_EXIT'" ;;
esac

# Point 5 and scale-in: the drain agent runs the worker one build at a time, in a loop, and
# never signals it, so an idle worker must exit by itself and the instance must stay up.
drain="$(drain_cloud)" || exit 1
if [ "$drain" != off ]; then
	[ "${VESPENE_MAX_BUILDS:-1}" = 1 ] || die "VESPENE_MAX_BUILDS (Packer variable max_builds) must be 1 with the drain agent (drain_agent = $drain): the agent checks the drain signal between builds; set drain_agent = \"off\" for another value"
	if [ "${VESPENE_MAX_WAIT_MINUTES:-5}" = -1 ] && [ "$drain" != none ]; then
		die "VESPENE_MAX_WAIT_MINUTES (Packer variable max_wait_minutes) must not be -1 with the drain agent (drain_agent = $drain): an idle worker that never exits can never be drained"
	fi
	[ "${VESPENE_WHEN_WORKERS_EXIT:-none}" = none ] || die "VESPENE_WHEN_WORKERS_EXIT (Packer variable when_workers_exit) must be 'none' with the drain agent (drain_agent = $drain): the agent restarts workers and the autoscaler removes the instance; set drain_agent = \"off\" to power off instead"
fi
case "${VESPENE_DRAIN_POLL_SECONDS:-5}" in
'' | *[!0-9]* | 0) die "VESPENE_DRAIN_POLL_SECONDS (Packer variable drain_poll_seconds) must be a whole number of seconds >= 1" ;;
esac
case "${VESPENE_DRAIN_HEARTBEAT_SECONDS:-600}" in
'' | *[!0-9]* | 0) die "VESPENE_DRAIN_HEARTBEAT_SECONDS (Packer variable drain_heartbeat_seconds) must be a whole number of seconds >= 1" ;;
esac
case "${VESPENE_DRAIN_HOOK_NAME:-vespene-drain}" in
'' | *[!A-Za-z0-9._/-]*) die "VESPENE_DRAIN_HOOK_NAME (Packer variable drain_hook_name) '${VESPENE_DRAIN_HOOK_NAME:-}' is not a lifecycle hook name" ;;
esac

# Point 6: the database settings and the boot check.
case "${VESPENE_DB_PORT:-5432}" in
'' | *[!0-9]*) die "VESPENE_DB_PORT (Packer variable db_port) must be a port number, got '${VESPENE_DB_PORT:-}'" ;;
esac
case "$VESPENE_DB_HOST" in
*[!A-Za-z0-9._:-]*) die "VESPENE_DB_HOST (Packer variable db_host) '$VESPENE_DB_HOST' is not a host name or address" ;;
esac
case "${VESPENE_DB_SSLMODE:-prefer}" in
disable | allow | prefer | require | verify-ca | verify-full) ;;
*) die "VESPENE_DB_SSLMODE (Packer variable db_sslmode) must be one of disable, allow, prefer, require, verify-ca, verify-full" ;;
esac
case "${VESPENE_DB_CHECK_TIMEOUT:-300}" in
'' | *[!0-9]*) die "VESPENE_DB_CHECK_TIMEOUT (Packer variable db_check_timeout_seconds) must be a whole number of seconds" ;;
esac
case "${VESPENE_ON_DB_UNREACHABLE:-none}" in
none | poweroff) ;;
*) die "VESPENE_ON_DB_UNREACHABLE (Packer variable on_db_unreachable) must be 'none' or 'poweroff', got '$VESPENE_ON_DB_UNREACHABLE'" ;;
esac

# Point 2: the console's secrets. SYMETRIC_SECRET_KEY (Vespene's spelling) is a Fernet key:
# url-safe base64 of 32 bytes. A wrong one makes every cloaked secret unreadable on the worker.
if ! VESPENE_SYMMETRIC_SECRET_KEY="$VESPENE_SYMMETRIC_SECRET_KEY" python3 -c '
import base64, os, sys
k = os.environ["VESPENE_SYMMETRIC_SECRET_KEY"].strip()
if k.startswith(("b\x27", "b\"")) and k[-1:] in ("\x27", "\""):
    k = k[2:-1]
try:
    ok = len(base64.urlsafe_b64decode(k.encode("ascii"))) == 32
except Exception:
    ok = False
sys.exit(0 if ok else 1)
' 2>/dev/null; then
	die "VESPENE_SYMMETRIC_SECRET_KEY (Packer variable symmetric_secret_key) is not a Fernet key (url-safe base64 of 32 bytes); copy SYMETRIC_SECRET_KEY from the console's /etc/vespene/settings.d/secrets.py"
fi

# Point 7: where /var/log/vespene is shipped.
case "$VESPENE_LOG_TARGET" in
tcp://?*:[0-9]* | udp://?*:[0-9]*)
	port="${VESPENE_LOG_TARGET##*:}"
	case "$port" in *[!0-9]*) die "VESPENE_LOG_TARGET (Packer variable log_target) '$VESPENE_LOG_TARGET' has no numeric port" ;; esac
	;;
*) die "VESPENE_LOG_TARGET (Packer variable log_target) '$VESPENE_LOG_TARGET' must look like tcp://HOST:PORT or udp://HOST:PORT (a syslog receiver)" ;;
esac

# Point 8: exactly one way for build roots to outlive the instance.
publish="${VESPENE_PUBLISH_COMMAND:-}"
if [ -n "${VESPENE_PUBLISH_COMMAND_B64:-}" ]; then
	publish="$(printf '%s' "$VESPENE_PUBLISH_COMMAND_B64" | base64 -d)" || die "VESPENE_PUBLISH_COMMAND_B64 is not base64"
fi
mount_source="${VESPENE_BUILDROOT_MOUNT_SOURCE:-}"
if [ -n "$publish" ] && [ -n "$mount_source" ]; then
	die "set only one of buildroot_publish_command (a Vespene trigger) and buildroot_mount_source (a shared filesystem), not both"
fi
if [ -z "$publish" ] && [ -z "$mount_source" ]; then
	die "set buildroot_publish_command (a Vespene trigger copying {{ build.working_dir }} away) or buildroot_mount_source (a shared filesystem mounted at the build root): build roots vanish with the instance otherwise"
fi
case "$mount_source" in
*[[:space:]]*) die "VESPENE_BUILDROOT_MOUNT_SOURCE (Packer variable buildroot_mount_source) must not contain spaces" ;;
esac

# Point 10: names only, the packages are installed by apt.
for p in ${VESPENE_EXTRA_PACKAGES:-}; do
	case "$p" in
	-* | *[!a-z0-9.+:=~-]*) die "VESPENE_EXTRA_PACKAGES (Packer variable extra_packages) entry '$p' is not a Debian package name" ;;
	esac
done
for t in ${VESPENE_BUILD_TOOLS:-}; do
	case "$t" in
	*/* | -*) die "VESPENE_BUILD_TOOLS (Packer variable build_tools) entry '$t' must be a command name, not a path" ;;
	esac
done

log "variables are consistent (pool $VESPENE_POOL, Vespene $VESPENE_VERSION, $VESPENE_WORKERS_PER_INSTANCE worker(s) per instance, drain agent: $drain)"
