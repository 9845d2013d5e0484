# shellcheck shell=bash
# shellcheck disable=SC2034 # constants and STEP_NAME are used by the steps that source this file
# Shared helpers for the provisioning steps under images/scripts/. Sourced, never executed.
#
# Every path the steps write goes through "$ROOT" so that the same steps can prepare a scratch
# directory tree (ROOT=/tmp/x, used by images/tests/test-checks.sh) or the real machine during a
# Packer bake (ROOT empty). In ROOT mode nothing outside ROOT is touched: no apt, no pip, no
# useradd, no chown; users are written to ROOT/etc/passwd with numeric ids the caller can own.
#
# Secrets (VESPENE_DB_PASSWORD, VESPENE_DJANGO_SECRET_KEY, VESPENE_SYMMETRIC_SECRET_KEY) are only
# ever written into files; no step enables xtrace or echoes them.

set -euo pipefail
set +x

ROOT="${ROOT:-}"
ROOT="${ROOT%/}"

# Fixed names of the image layout. They are part of the contract with check-image.sh and
# docs/images.md; the bake does not make them configurable.
APP_USER="vespene"
BUILD_GROUP="vespene-build"
APP_HOME="/var/lib/vespene"
VESPENE_DIR="/opt/vespene"
VENV_DIR="/opt/vespene-venv"
PYTHON="$VENV_DIR/bin/python3"
SETTINGS_DIR="/etc/vespene/settings.d"
MANIFEST="/etc/vespene/image.env"
LOG_DIR="/var/log/vespene"
LIB_DIR="/usr/local/lib/vespene-image"
CHECK_BIN="/usr/local/sbin/vespene-image-check"
UNIT_DIR="/etc/systemd/system"
WORKER_UNIT="vespene-worker.service"
DBCHECK_UNIT="vespene-db-check.service"
SUPERVISOR_CONF="/etc/vespene/workers-supervisord.conf"
RSYSLOG_CONF="/etc/rsyslog.d/60-vespene-forward.conf"
SUDOERS_FILE="/etc/sudoers.d/vespene-worker"
TMPFILES_CONF="/etc/tmpfiles.d/vespene-buildroot.conf"
DRAIN_AGENT_BIN="/usr/local/sbin/vespene-drain-agent"
DRAIN_AGENT_CONF="/etc/vespene/drain-agent.conf"

log() { printf '==> [vespene-image %s] %s\n' "${STEP_NAME:-step}" "$*"; }
die() {
	printf 'ERROR [vespene-image %s]: %s\n' "${STEP_NAME:-step}" "$*" >&2
	exit 1
}

# True when preparing a scratch tree instead of a machine.
root_mode() { [ -n "$ROOT" ]; }

# Refuse to run against the live machine unless root: a half-provisioned image is worse than none.
require_root_or_root_mode() {
	if ! root_mode && [ "$(id -u)" != 0 ]; then
		die "run as root (the Packer template runs the steps through sudo), or set ROOT=DIR to prepare a scratch tree"
	fi
}

# Fails with a message that names the variable (Packer variable in parentheses), never its value.
require_var() {
	local name="$1" packer_name="$2"
	if [ -z "${!name:-}" ]; then
		die "$name (Packer variable $packer_name) is empty; it is required"
	fi
}

require_uint() {
	local name="$1" packer_name="$2" min="$3"
	local v="${!name:-}"
	case "$v" in
	-1) return 0 ;;
	'' | *[!0-9]*) die "$name (Packer variable $packer_name) must be a whole number or -1 (no limit), got '$v'" ;;
	esac
	if [ "$v" -lt "$min" ]; then
		die "$name (Packer variable $packer_name) must be -1 (no limit) or at least $min, got $v"
	fi
}

# Pool names end up in unit files, supervisor commands, tags and labels: keep them to a charset
# that needs no quoting anywhere.
validate_pool() {
	require_var VESPENE_POOL pool
	case "$VESPENE_POOL" in
	*[!A-Za-z0-9._-]*) die "VESPENE_POOL (Packer variable pool) '$VESPENE_POOL' may only contain letters, digits, '.', '_' and '-'" ;;
	esac
}

# The drain agent's channel for this bake: aws, gce, none (the agent's loop without a cloud
# signal) or off (no agent: the worker unit runs the worker, or supervisord, directly). "auto"
# (the default of the Packer variable drain_agent) follows the source being built.
drain_cloud() {
	case "${VESPENE_DRAIN_AGENT:-auto}" in
	aws | gce | none | off) printf '%s\n' "$VESPENE_DRAIN_AGENT" ;;
	auto)
		case "${VESPENE_BUILD_SOURCE:-}" in
		amazon-ebs) echo aws ;;
		googlecompute) echo gce ;;
		*) die "VESPENE_DRAIN_AGENT (Packer variable drain_agent) is 'auto' but VESPENE_BUILD_SOURCE is '${VESPENE_BUILD_SOURCE:-}' (amazon-ebs or googlecompute); set drain_agent to aws, gce, none or off" ;;
		esac
		;;
	*) die "VESPENE_DRAIN_AGENT (Packer variable drain_agent) must be auto, aws, gce, none or off, got '$VESPENE_DRAIN_AGENT'" ;;
	esac
}

mkdirp() { mkdir -p "$ROOT$1"; }

# write_file MODE DEST: stdin -> ROOT/DEST with MODE, atomically (created 0600, then chmod).
write_file() {
	local mode="$1" dest="$2"
	mkdir -p "$(dirname "$ROOT$dest")"
	local tmp
	tmp="$(mktemp "$ROOT$dest.XXXXXX")"
	chmod 0600 "$tmp"
	cat >"$tmp"
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$ROOT$dest"
}

# chown only on a real machine; in ROOT mode the caller's ids stand for every user.
own() {
	if ! root_mode; then chown "$@"; fi
}

# Enables a unit the way systemctl does (symlinks into each WantedBy target's .wants directory).
enable_unit() {
	local unit="$1"
	if command -v systemctl >/dev/null 2>&1; then
		if root_mode; then
			systemctl --root="$ROOT" enable "$unit" >/dev/null 2>&1 || die "systemctl --root=$ROOT enable $unit failed"
		else
			systemctl enable "$unit" || die "systemctl enable $unit failed"
		fi
		return 0
	fi
	root_mode || die "systemctl is missing on the machine"
	local target
	# shellcheck disable=SC2013 # WantedBy= holds space-separated words
	for target in $(sed -n 's/^WantedBy=//p' "$ROOT$UNIT_DIR/$unit"); do
		mkdir -p "$ROOT$UNIT_DIR/$target.wants"
		ln -sfn "$UNIT_DIR/$unit" "$ROOT$UNIT_DIR/$target.wants/$unit"
	done
}

mask_unit() {
	local unit="$1"
	mkdir -p "$ROOT$UNIT_DIR"
	rm -f "$ROOT$UNIT_DIR/$unit"
	ln -sfn /dev/null "$ROOT$UNIT_DIR/$unit"
	local wants
	for wants in "$ROOT$UNIT_DIR"/*.wants; do
		[ -d "$wants" ] && rm -f "$wants/$unit"
	done
	return 0
}

# Python literal for a string (repr), so settings.d files never break on quotes or backslashes.
# The value travels through the environment, not argv: argv is visible to every process.
py_literal() {
	PY_LITERAL_VALUE="$1" python3 -c 'import os; print(repr(os.environ["PY_LITERAL_VALUE"]))'
}

# Where the uploaded scripts live (the Packer file provisioner puts them in /tmp/vespene-image).
image_src() {
	local d="${VESPENE_IMAGE_SRC:-}"
	if [ -z "$d" ]; then
		d="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
	fi
	[ -f "$d/check-image.sh" ] || die "VESPENE_IMAGE_SRC=$d does not hold check-image.sh"
	printf '%s\n' "$d"
}
