#!/usr/bin/env bash
# Tests the image checklist (images/scripts/check-image.sh) against scratch trees prepared by the
# real provisioning steps in ROOT mode: every point passes on a freshly provisioned tree, and each
# breakage makes exactly the expected point(s) fail, with their own message, while the others
# still pass. Also: the validation step's messages, secrets never printed, the worker command
# actually run under ssh-agent (directly, and by the installed drain agent in a loop), supervisor
# exiting once all workers have exited (drain_agent = off), and (when a
# PostgreSQL server is reachable) the live database probe of point 6.
#
# Offline; runs as root or not. Needs bash, git, python3 (/usr/bin/python3 for the venv).
# Optional, skipped loudly when missing: supervisord (+ its python module), ssh-agent, PostgreSQL
# at $VESPENE_TEST_PGHOST:$VESPENE_TEST_PGPORT (default 127.0.0.1:5432, user postgres, trust).

# The breakage mutations are single-quoted on purpose: they are eval'ed with R set to the copy.
# shellcheck disable=SC2016

set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SCRIPTS="$(cd "$HERE/../scripts" && pwd)"
CHECK="$SCRIPTS/check-image.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vespene-image-test.XXXXXX")"
PGDB=""
cleanup() {
	if [ -n "$PGDB" ]; then
		psql_admin -c "DROP DATABASE IF EXISTS $PGDB" >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

PASSES=0
FAILS=0
SKIPS=0
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
skip() {
	SKIPS=$((SKIPS + 1))
	printf 'SKIP - %s\n' "$1"
}

# Secrets used throughout; none of them may ever appear in any output.
DB_PASSWORD='pw-Zq8!x"y$HOME`x`'\''end'
DJANGO_KEY='django-secret-key-&*(-_=+)-q7'
FERNET_KEY="$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
ALL_OUTPUT="$WORK/all-output.log"
: >"$ALL_OUTPUT"

# --- a fake Vespene source: two tagged commits; manage.py records how it was started --------------
SRC="$WORK/vespene-src"
mkdir -p "$SRC/vespene"
cat >"$SRC/manage.py" <<'PY'
import os, sys, time
# Stand-in for Vespene's manage.py: records its arguments and whether it runs under ssh-agent.
with open(os.environ["VESPENE_TEST_RAN_LOG"], "a") as fh:
    fh.write("%s ssh_agent=%s\n" % (" ".join(sys.argv[1:]), "yes" if os.environ.get("SSH_AUTH_SOCK") else "no"))
time.sleep(float(os.environ.get("VESPENE_TEST_WORKER_SECONDS", "0.5")))
PY
echo 'VERSION = "1.0-dev"' >"$SRC/vespene/version.py"
echo 'Django==2.1.2' >"$SRC/requirements.txt"
gitc() { git -C "$SRC" -c user.email=test@example.invalid -c user.name=test "$@"; }
gitc init -q
gitc add -A
gitc commit -qm one
gitc tag v1
echo '# second commit' >>"$SRC/manage.py"
gitc commit -qam two
gitc tag v2

# --- provisioning ----------------------------------------------------------------------------
# The variables the Packer template passes, with test values; extra VAR=VALUE arguments override.
base_env() {
	cat <<EOF
VESPENE_POOL=linux
VESPENE_VERSION=v2
VESPENE_SOURCE=$SRC
VESPENE_BUILD_ROOT=/srv/vespene/buildroot
VESPENE_SUDO_USER=builder
VESPENE_DB_HOST=127.0.0.1
VESPENE_DB_PORT=5432
VESPENE_DB_NAME=vespene
VESPENE_DB_USER=vespene
VESPENE_DB_SSLMODE=prefer
VESPENE_DB_PASSWORD=$DB_PASSWORD
VESPENE_DJANGO_SECRET_KEY=$DJANGO_KEY
VESPENE_SYMMETRIC_SECRET_KEY=$FERNET_KEY
VESPENE_WORKERS_PER_INSTANCE=1
VESPENE_MAX_BUILDS=1
VESPENE_MAX_WAIT_MINUTES=5
VESPENE_WHEN_WORKERS_EXIT=none
VESPENE_ON_DB_UNREACHABLE=none
VESPENE_DB_CHECK_TIMEOUT=300
VESPENE_LOG_TARGET=tcp://logs.example.com:514
VESPENE_PUBLISH_COMMAND_B64=$(printf '%s' 'rsync -a {{ build.working_dir }} archive:/builds/' | base64 -w0)
VESPENE_BUILDROOT_MOUNT_SOURCE=
VESPENE_BUILD_TOOLS=make rsync
VESPENE_EXTRA_PACKAGES=make rsync
VESPENE_DRAIN_AGENT=auto
VESPENE_BUILD_SOURCE=amazon-ebs
VESPENE_DRAIN_POLL_SECONDS=5
VESPENE_DRAIN_HEARTBEAT_SECONDS=600
VESPENE_DRAIN_HOOK_NAME=vespene-drain
EOF
}

# run_step ROOT STEP [VAR=VALUE...]: one provisioning step in a clean environment.
run_step() {
	local root="$1" step="$2"
	shift 2
	local -a envs=()
	local line
	while IFS= read -r line; do envs+=("$line"); done < <(base_env)
	env -i PATH="$PATH" HOME="${HOME:-/tmp}" ROOT="$root" VESPENE_IMAGE_SRC="$SCRIPTS" \
		"${envs[@]}" "$@" bash "$SCRIPTS/$step"
}

# Stands in for apt in ROOT mode: the programs the packages would provide, linked from this
# machine when it has them, else a stub (only their presence on PATH is checked).
stand_in_apt() {
	local root="$1" tool
	mkdir -p "$root/usr/bin"
	# The aws CLI is always a stub: only its presence is checked, and a linked one may live
	# where another user cannot reach it.
	printf '#!/bin/sh\n# stand-in for the Debian package awscli\nexit 0\n' >"$root/usr/bin/aws"
	chmod 0755 "$root/usr/bin/aws"
	for tool in git ssh-agent sudo psql make rsync curl; do
		if command -v "$tool" >/dev/null 2>&1; then
			ln -sfn "$(command -v "$tool")" "$root/usr/bin/$tool"
		else
			printf '#!/bin/sh\n# stand-in for the Debian package providing %s\nexit 0\n' "$tool" >"$root/usr/bin/$tool"
			chmod 0755 "$root/usr/bin/$tool"
		fi
	done
}

# provision ROOT [VAR=VALUE...]: all steps, as the Packer template runs them.
provision() {
	local root="$1" step
	shift
	mkdir -p "$root"
	stand_in_apt "$root"
	for step in 00-validate.sh 10-packages.sh 20-vespene.sh 30-settings.sh 40-services.sh 90-cleanup.sh; do
		if ! run_step "$root" "$step" "$@" >>"$WORK/provision.log" 2>&1; then
			cat "$WORK/provision.log" >>"$ALL_OUTPUT"
			echo "provisioning step $step failed:" >&2
			tail -5 "$WORK/provision.log" >&2
			return 1
		fi
	done
	cat "$WORK/provision.log" >>"$ALL_OUTPUT"
	: >"$WORK/provision.log"
}

# check ROOT [args...] -> output in $OUT, status in $RC (expectations from the manifest only,
# unless VESPENE_* are given as VAR=VALUE before the root: check_env "VAR=V" -- ROOT ...).
OUT=""
RC=0
check() {
	local root="$1"
	shift
	OUT="$(env -i PATH="$PATH" HOME="${HOME:-/tmp}" "${CHECK_ENV[@]}" bash "$CHECK" --root "$root" "$@" 2>&1)" && RC=0 || RC=$?
	printf '%s\n' "$OUT" >>"$ALL_OUTPUT"
}
CHECK_ENV=()

line_of() { printf '%s\n' "$OUT" | grep -E "^(PASS|FAIL) \[$1/10\]" || true; }

# expect_only_fail NAME "POINTS" MESSAGE: the listed points fail (the first with MESSAGE in its
# line), every other point passes, and the exit status is 1.
expect_only_fail() {
	local name="$1" points="$2" message="$3" p bad=()
	[ "$RC" = 1 ] || bad+=("exit status $RC, expected 1")
	for p in 1 2 3 4 5 6 7 8 9 10; do
		case " $points " in
		*" $p "*) line_of "$p" | grep -q '^FAIL' || bad+=("point $p did not fail") ;;
		*) line_of "$p" | grep -q '^PASS' || bad+=("point $p did not pass: $(line_of "$p")") ;;
		esac
	done
	p="${points%% *}"
	line_of "$p" | grep -Fq -- "$message" || bad+=("point $p line lacks '$message': $(line_of "$p")")
	if [ ${#bad[@]} -eq 0 ]; then ok "$name"; else not_ok "$name" "${bad[@]}"; fi
}

expect_all_pass() {
	local name="$1" bad=() p
	[ "$RC" = 0 ] || bad+=("exit status $RC")
	for p in 1 2 3 4 5 6 7 8 9 10; do
		line_of "$p" | grep -q '^PASS' || bad+=("point $p: $(line_of "$p")")
	done
	printf '%s\n' "$OUT" | grep -q '^10 passed, 0 failed' || bad+=("no '10 passed, 0 failed' summary")
	if [ ${#bad[@]} -eq 0 ]; then ok "$name"; else not_ok "$name" "${bad[@]}"; fi
}

# --- 1. a freshly provisioned tree passes every point ----------------------------------------------
PRISTINE="$WORK/pristine"
provision "$PRISTINE"
check "$PRISTINE"
expect_all_pass "single-worker image with the drain agent (drain_agent=auto on amazon-ebs): all ten points pass"
if grep -qx 'CLOUD=aws' "$PRISTINE/etc/vespene/drain-agent.conf" && grep -qx 'ExecStart=/usr/local/sbin/vespene-drain-agent' "$PRISTINE/etc/systemd/system/vespene-worker.service" &&
	[ -x "$PRISTINE/usr/local/sbin/vespene-drain-agent" ] && [ ! -e "$PRISTINE/etc/vespene/workers-supervisord.conf" ] &&
	grep -qx 'VESPENE_DRAIN_AGENT=aws' "$PRISTINE/etc/vespene/image.env"; then
	ok "drain_agent=auto on amazon-ebs: the unit runs the installed agent with CLOUD=aws, no supervisord, manifest says aws"
else
	not_ok "drain_agent=auto on amazon-ebs: the unit runs the installed agent with CLOUD=aws" "$(cat "$PRISTINE/etc/vespene/drain-agent.conf" 2>&1)"
fi

# breaking CASE: copy the pristine tree, run the mutation (with R set to the copy), check.
case_n=0
breaking() { # NAME "POINTS" MESSAGE MUTATION...
	local name="$1" points="$2" message="$3"
	shift 3
	case_n=$((case_n + 1))
	local R="$WORK/case-$case_n"
	cp -a "$PRISTINE" "$R"
	(R="$R" eval "$*")
	check "$R"
	expect_only_fail "$name" "$points" "$message"
	rm -rf "$R"
}
S=/etc/vespene/settings.d
U=/etc/systemd/system

breaking "1: another Vespene commit fails point 1" "1" "but the console's version 'v2' is" \
	'git -C "$R/opt/vespene" -c advice.detachedHead=false checkout -q v1'
breaking "1: a locally modified Vespene fails point 1" "1" "local modifications" \
	'echo "# patched" >>"$R/opt/vespene/manage.py"'
breaking "1: no Vespene at all fails point 1" "1" "manage.py is missing" \
	'rm -rf "$R/opt/vespene"'
breaking "2: missing SYMETRIC_SECRET_KEY fails point 2" "2" "SYMETRIC_SECRET_KEY is not set" \
	"sed -i '/^SYMETRIC_SECRET_KEY/d' \"\$R$S/secrets.py\""
breaking "2: a malformed SYMETRIC_SECRET_KEY fails point 2" "2" "SYMETRIC_SECRET_KEY is not a Fernet key" \
	"sed -i 's/^SYMETRIC_SECRET_KEY = .*/SYMETRIC_SECRET_KEY = b\"not-a-key\"/' \"\$R$S/secrets.py\""
breaking "2: an empty database HOST fails point 2" "2" "DATABASES['default']['HOST'] is empty" \
	"sed -i \"s/'HOST': .*/'HOST': '',/\" \"\$R$S/database.py\""
breaking "2: a world-readable database.py fails point 2" "2" "world-readable" \
	"chmod 0644 \"\$R$S/database.py\""
breaking "2: a database.py readable by the sudo user's group fails point 2" "2" "the sudo user builder (builds) can read it" \
	"chmod 0640 \"\$R$S/database.py\""
breaking "2: the password leaked into a log fails point 2" "2" "also appears in /var/log/cloud-init.log" \
	"mkdir -p \"\$R/var/log\" && cat \"\$R$S/database.py\" >\"\$R/var/log/cloud-init.log\""
breaking "2: a syntax error in settings.d fails point 2" "2 3 5 8 9" "settings.d/workers.py: syntax error on line" \
	"echo 'BUILD_ROOT = (' >>\"\$R$S/workers.py\""
breaking "3: another BUILD_ROOT in settings fails point 3" "3" "BUILD_ROOT in /etc/vespene/settings.d is '/srv/other'" \
	"sed -i \"s|^BUILD_ROOT = .*|BUILD_ROOT = '/srv/other'|\" \"\$R$S/workers.py\""
breaking "3: a missing build root fails points 3 and 4" "3 4" "/srv/vespene/buildroot does not exist" \
	'rm -rf "$R/srv/vespene/buildroot"'
breaking "3: no tmpfiles.d rule fails point 3" "3" "does not recreate /srv/vespene/buildroot at boot" \
	'rm -f "$R/etc/tmpfiles.d/vespene-buildroot.conf"'
breaking "4: a build root without group write fails point 4" "4" "builder has no w permission on /srv/vespene/buildroot" \
	'chmod 0750 "$R/srv/vespene/buildroot"'
breaking "4: a sudo user outside vespene-build fails point 4" "4" "builder has no w permission" \
	"sed -i 's/^vespene-build:\\(.*\\),builder\$/vespene-build:\\1/' \"\$R/etc/group\""
breaking "4: an unreachable parent directory fails point 4" "4" "builder cannot enter /srv/vespene" \
	'chmod 0700 "$R/srv/vespene"'
breaking "4: no sudo rule fails point 4" "4" "vespene cannot run builds as builder" \
	'rm -f "$R/etc/sudoers.d/vespene-worker"'
breaking "4: a sudo rule for another user fails point 4" "4" "does not let vespene run commands as builder" \
	"sed -i 's/(builder)/(nobody)/' \"\$R/etc/sudoers.d/vespene-worker\""
breaking "5: no drain agent installed fails point 5" "5" "/usr/local/sbin/vespene-drain-agent is missing" \
	'rm -f "$R/usr/local/sbin/vespene-drain-agent"'
breaking "5: a drain agent that is not executable fails point 5" "5" "/usr/local/sbin/vespene-drain-agent is not executable" \
	'chmod 0644 "$R/usr/local/sbin/vespene-drain-agent"'
breaking "5: no drain-agent.conf fails point 5" "5" "/etc/vespene/drain-agent.conf is missing" \
	'rm -f "$R/etc/vespene/drain-agent.conf"'
breaking "5: the agent on the wrong cloud fails point 5" "5" "has CLOUD=gce, expected aws" \
	"sed -i 's/^CLOUD=.*/CLOUD=gce/' \"\$R/etc/vespene/drain-agent.conf\""
breaking "5: a configuration the agent rejects fails point 5" "5" "the drain agent rejects /etc/vespene/drain-agent.conf: " \
	"sed -i 's/^MAX_WAIT_MINUTES=.*/MAX_WAIT_MINUTES=-1/' \"\$R/etc/vespene/drain-agent.conf\""
breaking "5: the agent running 2 workers instead of 1 fails point 5" "5" "has WORKERS=2, expected 1" \
	"sed -i 's/^WORKERS=.*/WORKERS=2/' \"\$R/etc/vespene/drain-agent.conf\""
breaking "5: the agent running the worker without ssh-agent fails point 5" "5" "the drain agent runs '/opt/vespene-venv/bin/python3 manage.py worker linux --max-builds=1 --max-wait-minutes=5', expected '/usr/bin/ssh-agent" \
	"sed -i 's/^SSH_AGENT=.*/SSH_AGENT=/' \"\$R/etc/vespene/drain-agent.conf\""
breaking "5: the agent completing another hook fails point 5" "5" "HOOK_NAME=other, expected vespene-drain" \
	"sed -i 's/^HOOK_NAME=.*/HOOK_NAME=other/' \"\$R/etc/vespene/drain-agent.conf\""
breaking "5: a unit running the worker without the agent fails point 5" "5" "expected the drain agent /usr/local/sbin/vespene-drain-agent (drain_agent = aws)" \
	"sed -i 's|^ExecStart=.*|ExecStart=/usr/bin/ssh-agent /opt/vespene-venv/bin/python3 manage.py worker linux --max-builds=1 --max-wait-minutes=5|' \"\$R$U/vespene-worker.service\""
breaking "5: no aws CLI fails point 5" "5" "the aws CLI /usr/bin/aws is not installed" \
	'rm -f "$R/usr/bin/aws"'
breaking "5: no curl fails point 5" "5" "curl is not on PATH" \
	'rm -f "$R/usr/bin/curl"'
breaking "7: worker logs outside /var/log/vespene (agent) fail point 7" "7" "the drain agent writes worker logs to '/tmp/logs', not /var/log/vespene" \
	"sed -i 's|^LOG_DIR=.*|LOG_DIR=/tmp/logs|' \"\$R/etc/vespene/drain-agent.conf\""
breaking "5: a disabled worker unit fails point 5" "5" "vespene-worker.service is not enabled" \
	"rm -f \"\$R$U/multi-user.target.wants/vespene-worker.service\""
breaking "5: Restart=always fails point 5" "5" "Restart=always" \
	"sed -i 's/^Restart=no/Restart=always/' \"\$R$U/vespene-worker.service\""
breaking "5: a worker running as root fails point 5" "5" "runs as 'root'" \
	"sed -i 's/^User=vespene/User=root/' \"\$R$U/vespene-worker.service\""
breaking "5: a baked worker_id fails point 5" "5" "worker_id is baked in" \
	'echo abc >"$R/etc/vespene/worker_id"'
breaking "5: /etc/vespene on a tmpfs fails point 5 (a standby instance would come back as a new worker)" "5" "would lose /etc/vespene/worker_id" \
	'echo "tmpfs /etc/vespene tmpfs defaults 0 0" >>"$R/etc/fstab"'
breaking "5: an etc-vespene.mount of Type=tmpfs fails point 5" "5" "etc-vespene.mount" \
	'mkdir -p "$R/etc/systemd/system" && printf "[Mount]\nWhat=tmpfs\nWhere=/etc/vespene\nType=tmpfs\n" >"$R/etc/systemd/system/etc-vespene.mount"'
breaking "5: a fixed FILESERVING_HOSTNAME fails point 5" "5" "FILESERVING_HOSTNAME is 'build-vm'" \
	"sed -i 's/^FILESERVING_HOSTNAME = .*/FILESERVING_HOSTNAME = \"build-vm\"/' \"\$R$S/workers.py\""
breaking "5: a missing ssh-agent fails points 5 and 10" "5 10" "/usr/bin/ssh-agent is missing" \
	'rm -f "$R/usr/bin/ssh-agent"'
breaking "6: a disabled database check fails point 6" "6" "vespene-db-check.service is not enabled" \
	"rm -f \"\$R$U/multi-user.target.wants/vespene-db-check.service\""
breaking "6: a worker not requiring the database check fails point 6" "6" "does not Require vespene-db-check.service" \
	"sed -i '/^Requires=/d' \"\$R$U/vespene-worker.service\""
breaking "6: no psql fails point 6" "6" "psql (postgresql-client) is not on PATH" \
	'rm -f "$R/usr/bin/psql"'
breaking "6: another FailureAction fails point 6" "6" "FailureAction is 'reboot', expected 'none'" \
	"sed -i 's/^FailureAction=.*/FailureAction=reboot/' \"\$R$U/vespene-db-check.service\""
breaking "7: no log forwarding fails point 7" "7" "60-vespene-forward.conf is missing" \
	'rm -f "$R/etc/rsyslog.d/60-vespene-forward.conf"'
breaking "7: forwarding elsewhere fails point 7" "7" "does not forward to tcp://logs.example.com:514" \
	"sed -i 's/Target=\"logs.example.com\"/Target=\"other.example.com\"/' \"\$R/etc/rsyslog.d/60-vespene-forward.conf\""
breaking "7: no /var/log/vespene fails point 7" "7" "/var/log/vespene does not exist" \
	'rm -rf "$R/var/log/vespene"'
breaking "8: no publish trigger fails point 8" "8" "no vespene.plugins.triggers.command entry in success_triggers and failure_triggers" \
	"rm -f \"\$R$S/triggers.py\""
breaking "8: publishing only successful builds fails point 8" "8" "no vespene.plugins.triggers.command entry in failure_triggers" \
	"sed -i '/failure_triggers/d' \"\$R$S/triggers.py\""
breaking "8: a publish program not on PATH fails points 8 and 10" "8 10" "the publish command's program 'rsync' is not on PATH" \
	'rm -f "$R/usr/bin/rsync"'
breaking "9: an unmasked vespene.service running gunicorn fails point 9" "9" "vespene.service (web interface and workers) is not masked" \
	"rm -f \"\$R$U/vespene.service\" && printf '[Service]\\nExecStart=/usr/bin/gunicorn vespene.wsgi\\n[Install]\\nWantedBy=multi-user.target\\n' >\"\$R$U/vespene.service\" && ln -s $U/vespene.service \"\$R$U/multi-user.target.wants/vespene.service\""
breaking "9: FILESERVING_ENABLED = True fails point 9" "9" "FILESERVING_ENABLED is True" \
	"sed -i 's/^FILESERVING_ENABLED = .*/FILESERVING_ENABLED = True/' \"\$R$S/workers.py\""
breaking "9: a supervisor program running gunicorn fails point 9" "9" "/etc/supervisor/conf.d/web.conf defines a web interface program" \
	"mkdir -p \"\$R/etc/supervisor/conf.d\" && printf '[program:server]\\ncommand=gunicorn --bind 127.0.0.1:8000 vespene.wsgi\\n' >\"\$R/etc/supervisor/conf.d/web.conf\""
breaking "10: a missing build tool fails point 10" "10" "not on PATH" \
	'rm -f "$R/usr/bin/make"'

# --- 1b. drain_agent = off: the worker unit runs the worker directly (best-effort scale-in) -------
LEGACY="$WORK/legacy"
provision "$LEGACY" VESPENE_DRAIN_AGENT=off
check "$LEGACY"
expect_all_pass "drain_agent=off: the unit runs the worker directly; all ten points pass"
if [ ! -e "$LEGACY/etc/vespene/drain-agent.conf" ] && grep -qx 'VESPENE_DRAIN_AGENT=off' "$LEGACY/etc/vespene/image.env"; then
	ok "drain_agent=off: no agent configuration, and the manifest says off"
else
	not_ok "drain_agent=off: no agent configuration, and the manifest says off" "$(ls "$LEGACY/etc/vespene")"
fi
PRISTINE_AGENT="$PRISTINE"
PRISTINE="$LEGACY"
breaking "5: a different --max-builds fails point 5" "5" "--max-builds=10 --max-wait-minutes=5', expected" \
	"sed -i 's/--max-builds=1 /--max-builds=10 /' \"\$R$U/vespene-worker.service\""
breaking "5: a worker without ssh-agent fails point 5" "5" "expected '/usr/bin/ssh-agent /opt/vespene-venv/bin/python3 manage.py worker linux" \
	"sed -i 's|^ExecStart=/usr/bin/ssh-agent |ExecStart=|' \"\$R$U/vespene-worker.service\""
breaking "7: worker output to the journal fails point 7" "7" "StandardOutput is 'journal'" \
	"sed -i 's|^StandardOutput=.*|StandardOutput=journal|' \"\$R$U/vespene-worker.service\""
breaking "5: the drain agent where drain_agent=off expects none fails point 5" "5" "starts '/usr/local/sbin/vespene-drain-agent', expected '/usr/bin/ssh-agent" \
	"sed -i 's|^ExecStart=.*|ExecStart=/usr/local/sbin/vespene-drain-agent|' \"\$R$U/vespene-worker.service\""
PRISTINE="$PRISTINE_AGENT"

# The bake passes the requested values in the environment: they win over the manifest.
CHECK_ENV=(VESPENE_VERSION=v1)
check "$PRISTINE"
CHECK_ENV=()
expect_only_fail "expectations from the environment override the manifest" "1" "the console's version 'v1' is"

# No manifest and no environment: the checks say what they miss instead of passing.
R="$WORK/no-manifest"
cp -a "$PRISTINE" "$R"
rm -f "$R/etc/vespene/image.env"
check "$R"
if [ "$RC" = 1 ] && line_of 1 | grep -Fq "no expected VESPENE_VERSION"; then
	ok "without a manifest, a point with no expectation fails and says which value is missing"
else
	not_ok "without a manifest, a point with no expectation fails and says which value is missing" "$OUT"
fi
rm -rf "$R"

# --point selects points; a single failing point gives exit status 1.
check "$PRISTINE" --point 3 --point 9
if [ "$RC" = 0 ] && [ "$(printf '%s\n' "$OUT" | grep -c '^PASS')" = 2 ] && printf '%s\n' "$OUT" | grep -q '^2 passed, 0 failed'; then
	ok "--point 3 --point 9 checks exactly those two points"
else
	not_ok "--point 3 --point 9 checks exactly those two points" "$OUT"
fi

# --- 2. the worker command line, actually run ----------------------------------------------------
relocate() { # FILE ROOT: image paths -> paths inside ROOT (and a short runtime dir)
	sed -e "s#/opt/vespene#$2/opt/vespene#g" -e "s#/var/log/vespene#$2/var/log/vespene#g" \
		-e "s#/usr/local/lib/vespene-image#$2/usr/local/lib/vespene-image#g" -e "s#/run/vespene#$WORK/run#g" "$1"
}
if [ -x /usr/bin/ssh-agent ]; then
	exec_start="$(sed -n 's/^ExecStart=//p' "$LEGACY$U/vespene-worker.service" | sed "s#/opt/vespene#$LEGACY/opt/vespene#g")"
	: >"$WORK/ran.log"
	# shellcheck disable=SC2086 # ExecStart is a plain word list (pool names are restricted)
	(cd "$LEGACY/opt/vespene" && VESPENE_TEST_RAN_LOG="$WORK/ran.log" VESPENE_TEST_WORKER_SECONDS=0 $exec_start)
	if [ "$(cat "$WORK/ran.log")" = "worker linux --max-builds=1 --max-wait-minutes=5 ssh_agent=yes" ]; then
		ok "the unit's ExecStart runs 'manage.py worker linux --max-builds=1 --max-wait-minutes=5' under ssh-agent"
	else
		not_ok "the unit's ExecStart runs the worker under ssh-agent" "$(cat "$WORK/ran.log")"
	fi
	# The image's agent with the image's configuration (only the channel switched to none, and
	# the paths moved into the tree) runs the same worker command, in a loop, under ssh-agent.
	mkdir -p "$WORK/agent-logs"
	sed -e "s#/opt/vespene#$PRISTINE/opt/vespene#g" -e 's#^CLOUD=.*#CLOUD=none#' -e 's#^POLL_SECONDS=.*#POLL_SECONDS=1#' \
		-e "s#^LOG_DIR=.*#LOG_DIR=$WORK/agent-logs#" "$PRISTINE/etc/vespene/drain-agent.conf" >"$WORK/agent.conf"
	: >"$WORK/ran.log"
	VESPENE_TEST_RAN_LOG="$WORK/ran.log" VESPENE_TEST_WORKER_SECONDS=0.2 timeout 5 "$PRISTINE/usr/local/sbin/vespene-drain-agent" --config "$WORK/agent.conf" >"$WORK/agent.out" 2>&1 || true
	runs="$(grep -c . "$WORK/ran.log" || true)"
	if [ "$runs" -ge 2 ] && [ "$(sort -u "$WORK/ran.log")" = "worker linux --max-builds=1 --max-wait-minutes=5 ssh_agent=yes" ]; then
		ok "the installed drain agent runs 'manage.py worker linux --max-builds=1 --max-wait-minutes=5' under ssh-agent, again after each exit ($runs runs in 5 s)"
	else
		not_ok "the installed drain agent runs the worker under ssh-agent in a loop" "$(cat "$WORK/ran.log")" "$(tail -n 5 "$WORK/agent.out")"
	fi
else
	skip "ssh-agent is not installed: the worker command line is not executed"
fi

# --- 3. several workers per instance under supervisor ---------------------------------------------
MULTI="$WORK/multi"
provision "$MULTI" VESPENE_DRAIN_AGENT=off VESPENE_WORKERS_PER_INSTANCE=3 VESPENE_MAX_BUILDS=10 VESPENE_MAX_WAIT_MINUTES=60 VESPENE_WHEN_WORKERS_EXIT=poweroff
check "$MULTI"
expect_all_pass "three workers per instance under supervisor (drain_agent=off): all ten points pass"
PRISTINE_SINGLE="$PRISTINE"
PRISTINE="$MULTI"
SUP=/etc/vespene/workers-supervisord.conf
breaking "5: supervisor autorestart=true fails point 5" "5" "autorestart=true, expected false" \
	"sed -i 's/^autorestart=false/autorestart=true/' \"\$R$SUP\""
breaking "5: supervisor running 2 of 3 workers fails point 5" "5" "numprocs=2, expected 3" \
	"sed -i 's/^numprocs=3/numprocs=2/' \"\$R$SUP\""
breaking "5: no exit listener fails point 5" "5" "no eventlistener shuts supervisor down" \
	"sed -i '/^\\[eventlistener:exit_when_all_exited\\]/,\$d' \"\$R$SUP\""
breaking "5: startsecs left at its default fails point 5" "5" "startsecs=1" \
	"sed -i '/^startsecs=0/d' \"\$R$SUP\""
breaking "5: another poweroff policy fails point 5" "5" "SuccessAction is 'none', expected 'poweroff'" \
	"sed -i 's/^SuccessAction=poweroff/SuccessAction=none/' \"\$R$U/vespene-worker.service\""
breaking "7: worker logs outside /var/log/vespene fail point 7" "7" "supervisor program:worker logs to '/tmp/w.log'" \
	"sed -i 's|^stdout_logfile=.*|stdout_logfile=/tmp/w.log|' \"\$R$SUP\""
PRISTINE="$PRISTINE_SINGLE"

# Three workers with the drain agent on GCE (drain_agent=auto on googlecompute): three loops of
# the agent, no supervisord.
MULTI_AGENT="$WORK/multi-agent"
provision "$MULTI_AGENT" VESPENE_BUILD_SOURCE=googlecompute VESPENE_WORKERS_PER_INSTANCE=3
check "$MULTI_AGENT"
expect_all_pass "three workers per instance with the drain agent on googlecompute: all ten points pass"
if grep -qx 'CLOUD=gce' "$MULTI_AGENT/etc/vespene/drain-agent.conf" && grep -qx 'WORKERS=3' "$MULTI_AGENT/etc/vespene/drain-agent.conf" &&
	[ ! -e "$MULTI_AGENT/etc/vespene/workers-supervisord.conf" ]; then
	ok "drain_agent=auto on googlecompute: CLOUD=gce, WORKERS=3, no supervisord configuration"
else
	not_ok "drain_agent=auto on googlecompute: CLOUD=gce, WORKERS=3, no supervisord configuration" "$(cat "$MULTI_AGENT/etc/vespene/drain-agent.conf")"
fi
PRISTINE="$MULTI_AGENT"
breaking "5: the agent running 1 of 3 workers fails point 5" "5" "has WORKERS=1, expected 3" \
	"sed -i 's/^WORKERS=.*/WORKERS=1/' \"\$R/etc/vespene/drain-agent.conf\""
breaking "5: an image for GCE whose agent watches AWS fails point 5" "5" "has CLOUD=aws, expected gce" \
	"sed -i 's/^CLOUD=.*/CLOUD=aws/' \"\$R/etc/vespene/drain-agent.conf\""
PRISTINE="$PRISTINE_SINGLE"

SUPERVISORD="$(command -v supervisord || true)"
if [ -n "$SUPERVISORD" ] && /usr/bin/python3 -c 'import supervisor.childutils' 2>/dev/null; then
	mkdir -p "$WORK/run"
	relocate "$MULTI$SUP" "$MULTI" >"$WORK/supervisord.conf"
	: >"$WORK/ran.log"
	start=$(date +%s)
	sup_rc=0
	VESPENE_TEST_RAN_LOG="$WORK/ran.log" VESPENE_TEST_WORKER_SECONDS=1 timeout 90 "$SUPERVISORD" -n -c "$WORK/supervisord.conf" >"$WORK/supervisord.out" 2>&1 || sup_rc=$?
	took=$(($(date +%s) - start))
	want="worker linux --max-builds=10 --max-wait-minutes=60 ssh_agent=yes"
	runs="$(grep -c . "$WORK/ran.log" || true)"
	if [ "$sup_rc" = 0 ] && [ "$runs" = 3 ] && [ "$(sort -u "$WORK/ran.log")" = "$want" ]; then
		ok "supervisor started 3 workers once each ('$want') and exited by itself after ${took}s"
	else
		not_ok "supervisor starts 3 workers once each and exits when all have exited" \
			"supervisord exit status $sup_rc after ${took}s (124 = still running at the 90 s timeout)" \
			"worker runs: $runs" "$(cat "$WORK/ran.log")" "$(tail -5 "$MULTI/var/log/vespene/supervisord.log" 2>/dev/null)"
	fi
	if grep -q "shutting supervisord down" "$MULTI/var/log/vespene/exit_when_all_exited.log" 2>/dev/null; then
		ok "the exit listener logged why it stopped supervisor"
	else
		not_ok "the exit listener logged why it stopped supervisor" "$(cat "$MULTI/var/log/vespene/exit_when_all_exited.log" 2>/dev/null)"
	fi
else
	skip "supervisord (Debian package 'supervisor') is not installed: supervisor's exit-when-all-exited is not run"
fi

# --- 3b. the generated configuration is accepted by the programs that read it ---------------------
if command -v systemd-analyze >/dev/null 2>&1; then
	for tree in "$PRISTINE" "$LEGACY" "$MULTI" "$MULTI_AGENT"; do
		for unit in vespene-worker.service vespene-db-check.service; do
			# The check script is installed under ROOT, not on this machine: that one complaint
			# ("is not executable") is expected; anything else (unknown keys, bad values) is not.
			verify="$(systemd-analyze verify "$tree$U/$unit" 2>&1 | grep -Ev '(vespene-image-check|vespene-drain-agent) is not executable' || true)"
			if [ -z "$verify" ]; then
				ok "systemd-analyze verify accepts $unit ($(basename "$tree"))"
			else
				not_ok "systemd-analyze verify accepts $unit ($(basename "$tree"))" "$verify"
			fi
		done
	done
else
	skip "systemd-analyze is not installed: the generated units are not verified by systemd"
fi
if command -v rsyslogd >/dev/null 2>&1; then
	mkdir -p "$WORK/rsyslog"
	printf 'global(workDirectory="%s")\ninclude(file="%s")\n' "$WORK/rsyslog" "$PRISTINE/etc/rsyslog.d/60-vespene-forward.conf" >"$WORK/rsyslog/main.conf"
	if verify="$(rsyslogd -N1 -f "$WORK/rsyslog/main.conf" 2>&1)"; then
		ok "rsyslogd -N1 accepts the log forwarding rule"
	else
		not_ok "rsyslogd -N1 accepts the log forwarding rule" "$verify"
	fi
else
	skip "rsyslogd is not installed: the log forwarding rule is not validated by rsyslog"
fi

# --- 4. a shared filesystem instead of a publish trigger ------------------------------------------
MOUNT="$WORK/mount"
provision "$MOUNT" VESPENE_PUBLISH_COMMAND_B64= VESPENE_BUILDROOT_MOUNT_SOURCE=fs-0123.efs.example.com:/
check "$MOUNT"
expect_all_pass "build root on a shared filesystem (fstab): all ten points pass"
if grep -q '^fs-0123.efs.example.com:/ /srv/vespene/buildroot nfs4 _netdev,nofail,noatime 0 0$' "$MOUNT/etc/fstab" && [ ! -e "$MOUNT/etc/vespene/settings.d/triggers.py" ]; then
	ok "the shared build root is an fstab line and no trigger is written"
else
	not_ok "the shared build root is an fstab line and no trigger is written" "$(cat "$MOUNT/etc/fstab")"
fi
PRISTINE="$MOUNT"
breaking "8: a missing fstab line fails point 8" "8" "/etc/fstab does not mount fs-0123.efs.example.com:/ at /srv/vespene/buildroot" \
	"sed -i '/fs-0123/d' \"\$R/etc/fstab\""
PRISTINE="$PRISTINE_SINGLE"

# --- 5. the validation step refuses inconsistent variables, naming the variable -------------------
refuses() { # NAME MESSAGE VAR=VALUE...
	local name="$1" message="$2" out rc=0
	shift 2
	out="$(run_step "$WORK/refused" 00-validate.sh "$@" 2>&1)" || rc=$?
	printf '%s\n' "$out" >>"$ALL_OUTPUT"
	if [ "$rc" != 0 ] && printf '%s' "$out" | grep -Fq -- "$message"; then
		ok "validation: $name"
	else
		not_ok "validation: $name" "exit status $rc" "$out"
	fi
}
refuses "an empty db_host" "VESPENE_DB_HOST (Packer variable db_host) is empty" VESPENE_DB_HOST=
refuses "an empty db_password" "VESPENE_DB_PASSWORD (Packer variable db_password) is empty" VESPENE_DB_PASSWORD=
refuses "a build root under /tmp" "is cleared at boot" VESPENE_BUILD_ROOT=/tmp/vespene
refuses "a relative build root" "must be an absolute path" VESPENE_BUILD_ROOT=builds
refuses "both a trigger and a shared build root" "set only one of buildroot_publish_command" VESPENE_BUILDROOT_MOUNT_SOURCE=nfs:/x
refuses "neither a trigger nor a shared build root" "set buildroot_publish_command" VESPENE_PUBLISH_COMMAND_B64=
refuses "a malformed symmetric key" "VESPENE_SYMMETRIC_SECRET_KEY (Packer variable symmetric_secret_key) is not a Fernet key" VESPENE_SYMMETRIC_SECRET_KEY=short
refuses "root as the sudo user" "must not be root" VESPENE_SUDO_USER=root
refuses "a pool name with a space" "may only contain letters, digits" "VESPENE_POOL=my pool"
refuses "zero workers per instance" "workers_per_instance) must be a whole number >= 1" VESPENE_WORKERS_PER_INSTANCE=0
refuses "max_builds 0" "max_builds) must be -1 (no limit) or at least 1" VESPENE_MAX_BUILDS=0
refuses "a log target without a port" "must look like tcp://HOST:PORT" VESPENE_LOG_TARGET=logs.example.com
refuses "an unknown poweroff policy" "when_workers_exit) must be 'none' or 'poweroff'" VESPENE_WHEN_WORKERS_EXIT=halt
refuses "poweroff with the drain agent" "when_workers_exit) must be 'none' with the drain agent (drain_agent = aws)" VESPENE_WHEN_WORKERS_EXIT=poweroff
refuses "max_builds 10 with the drain agent" "max_builds) must be 1 with the drain agent" VESPENE_MAX_BUILDS=10
refuses "max_wait_minutes -1 with the drain agent" "an idle worker that never exits can never be drained" VESPENE_MAX_WAIT_MINUTES=-1
refuses "an unknown drain_agent" "drain_agent) must be auto, aws, gce, none or off, got 'yes'" VESPENE_DRAIN_AGENT=yes
refuses "drain_agent=auto without a known source" "is 'auto' but VESPENE_BUILD_SOURCE is 'docker'" VESPENE_BUILD_SOURCE=docker
refuses "a drain poll of 0 seconds" "drain_poll_seconds) must be a whole number of seconds >= 1" VESPENE_DRAIN_POLL_SECONDS=0
if out="$(run_step "$WORK/refused" 00-validate.sh VESPENE_DRAIN_AGENT=off VESPENE_MAX_BUILDS=-1 VESPENE_MAX_WAIT_MINUTES=-1 VESPENE_WHEN_WORKERS_EXIT=poweroff 2>&1)"; then
	ok "validation: without the drain agent, -1 (no limit) is accepted for max_builds and max_wait_minutes, and poweroff"
else
	not_ok "validation: without the drain agent, -1 (no limit) is accepted for max_builds and max_wait_minutes, and poweroff" "$out"
fi
printf '%s\n' "${out:-}" >>"$ALL_OUTPUT"
if out="$(run_step "$WORK/refused" 00-validate.sh "VESPENE_SYMMETRIC_SECRET_KEY=b'$FERNET_KEY'" 2>&1)"; then
	ok "validation: the symmetric key may be pasted as Python bytes (b'...') from secrets.py"
else
	not_ok "validation: the symmetric key may be pasted as Python bytes" "$out"
fi

# --- 6. the live database probe of point 6 ------------------------------------------------------
PGHOST_T="${VESPENE_TEST_PGHOST:-127.0.0.1}"
PGPORT_T="${VESPENE_TEST_PGPORT:-5432}"
PGUSER_T="${VESPENE_TEST_PGUSER:-postgres}"
psql_admin() { PGCONNECT_TIMEOUT=3 psql -X -q -h "$PGHOST_T" -p "$PGPORT_T" -U "$PGUSER_T" -d "${VESPENE_TEST_PGDB:-postgres}" "$@"; }
if command -v psql >/dev/null 2>&1 && psql_admin -c 'SELECT 1' >/dev/null 2>&1; then
	PGDB="vespene_image_check_$$"
	psql_admin -c "CREATE DATABASE $PGDB" >/dev/null
	PGDB_ADMIN() { PGCONNECT_TIMEOUT=3 psql -X -q -h "$PGHOST_T" -p "$PGPORT_T" -U "$PGUSER_T" -d "$PGDB" "$@"; }
	PGDB_ADMIN -c "CREATE TABLE worker_pools (id serial PRIMARY KEY, name varchar(512) UNIQUE NOT NULL); INSERT INTO worker_pools (name) VALUES ('linux')" >/dev/null
	LIVE="$WORK/live"
	provision "$LIVE" VESPENE_DB_HOST="$PGHOST_T" VESPENE_DB_PORT="$PGPORT_T" VESPENE_DB_NAME="$PGDB" VESPENE_DB_USER="$PGUSER_T"
	check "$LIVE" --point 6 --live-db
	if [ "$RC" = 0 ] && line_of 6 | grep -Fq "pool linux exists in worker_pools"; then
		ok "live: point 6 connects with settings.d's credentials and finds the pool"
	else
		not_ok "live: point 6 connects with settings.d's credentials and finds the pool" "$OUT"
	fi
	PGDB_ADMIN -c "DELETE FROM worker_pools" >/dev/null
	check "$LIVE" --point 6 --live-db
	if [ "$RC" = 1 ] && line_of 6 | grep -Fq "but pool linux is not in worker_pools"; then
		ok "live: point 6 fails when the pool does not exist"
	else
		not_ok "live: point 6 fails when the pool does not exist" "$OUT"
	fi
	sed -i "s/'PORT': .*/'PORT': '1',/" "$LIVE/etc/vespene/settings.d/database.py"
	start=$(date +%s)
	check "$LIVE" --point 6 --live-db --wait 4
	took=$(($(date +%s) - start))
	if [ "$RC" = 1 ] && line_of 6 | grep -Fq "cannot reach the database $PGUSER_T@$PGHOST_T:1/$PGDB within 4s" && [ "$took" -ge 4 ]; then
		ok "live: point 6 retries for --wait 4 (${took}s) and names the database it could not reach"
	else
		not_ok "live: point 6 retries for --wait and names the database it could not reach" "took ${took}s" "$OUT"
	fi
else
	skip "no PostgreSQL at $PGHOST_T:$PGPORT_T (user $PGUSER_T): the live database probe of point 6 is not run"
fi

# --- 7. secrets never appear in any output -------------------------------------------------------
leaked=()
grep -Fq -- "$DB_PASSWORD" "$ALL_OUTPUT" && leaked+=("the database password")
grep -Fq -- "$DJANGO_KEY" "$ALL_OUTPUT" && leaked+=("the Django secret key")
grep -Fq -- "$FERNET_KEY" "$ALL_OUTPUT" && leaked+=("the symmetric key")
if [ ${#leaked[@]} -eq 0 ] && [ -s "$ALL_OUTPUT" ]; then
	ok "no secret appears in the $(wc -l <"$ALL_OUTPUT") lines of provisioning and check output"
else
	not_ok "no secret appears in the provisioning and check output" "leaked: ${leaked[*]:-none (but no output was captured)}"
fi
# ...and the files holding them are written intact (quotes, backslashes, $ and backticks).
roundtrip="$(P="$DB_PASSWORD" D="$DJANGO_KEY" F="$FERNET_KEY" SETTINGS="$PRISTINE/etc/vespene/settings.d" /usr/bin/python3 -c '
import os
ns = {}
for n in ("database.py", "secrets.py"):
    exec(open(os.path.join(os.environ["SETTINGS"], n)).read(), ns)
print(ns["DATABASES"]["default"]["PASSWORD"] == os.environ["P"]
      and ns["SECRET_KEY"] == os.environ["D"]
      and ns["SYMETRIC_SECRET_KEY"] == os.environ["F"].encode())
' 2>&1)" || true
if [ "$roundtrip" = True ]; then
	ok "settings.d holds the secrets byte for byte (quotes, \$, backticks survive)"
else
	not_ok "settings.d holds the secrets byte for byte" "python says: $roundtrip"
fi

printf '\n%d passed, %d failed, %d skipped (as uid %s)\n' "$PASSES" "$FAILS" "$SKIPS" "$(id -u)"
[ "$FAILS" -eq 0 ]
