#!/usr/bin/env bash
# Offline CI for images/ and examples/ (called by .ci/run):
#   1. packer fmt -check         (Debian's packer 1.6.6)
#   2. packer validate           every template, with dummy variables, for each source and both
#   3. shellcheck                every shell script, the drain agent (no .sh suffix), and
#                                py_compile for the supervisor listener and the fake servers
#   4. terraform fmt -check      examples/, when terraform is installed (skipped loudly otherwise)
#   5. images/tests/test-checks.sh   the checklist checks against provisioned scratch trees,
#                                    as this user and, when run as root, again as 'nobody'
#   6. images/tests/test-drain-agent.sh  the drain agent against fake IMDSv2 / GCE metadata
#                                    servers, a fake worker and a fake aws CLI (bounded: 300 s)
# Installs packer, shellcheck and curl with apt-get when missing (and, best effort, supervisor and
# rsyslog, which the checklist tests use when present). Exits non-zero on any failure.
#
# Environment: IMAGES_CI_SKIP_NONROOT=1 skips the second test run as 'nobody'.

set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export CHECKPOINT_DISABLE=1 # packer and terraform: no version check over the network
export PACKER_NO_COLOR=1

FAILED=()
step_start=0
step() {
	step_start=$(date +%s)
	printf '\n== %s\n' "$1"
}
step_done() {
	printf -- '-- %s (%ss)\n' "$1" "$(($(date +%s) - step_start))"
}
fail() {
	FAILED+=("$1")
	printf 'FAILED: %s\n' "$1"
}

# --- tools --------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() { # PACKAGE...: as root only
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		return 1
	fi
	if [ "$APT_UPDATED" = 0 ]; then
		apt-get update -qq >/dev/null 2>&1 || true
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

step "tools"
for pair in packer:packer shellcheck:shellcheck curl:curl; do
	tool="${pair%%:*}"
	pkg="${pair#*:}"
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "installing $pkg (apt-get)"
		apt_install "$pkg" || {
			echo "ERROR: $tool is missing and could not be installed (apt-get install $pkg needs root)" >&2
			exit 1
		}
	fi
done
# Optional: used by images/tests/test-checks.sh when present (it skips those parts loudly).
if ! command -v supervisord >/dev/null 2>&1; then
	apt_install supervisor || echo "NOTE: supervisor not installed: the supervisor run in the checklist tests will be skipped"
fi
if ! command -v rsyslogd >/dev/null 2>&1; then
	apt_install rsyslog || echo "NOTE: rsyslog not installed: rsyslogd -N1 in the checklist tests will be skipped"
fi
packer version
shellcheck --version | sed -n 2p
step_done "tools"

# --- 1. packer fmt ----------------------------------------------------------------------------
step "packer fmt -check"
for dir in "$HERE" "$HERE/vars"; do
	if packer fmt -check "$dir" >/dev/null; then
		echo "ok: $dir"
	else
		packer fmt -diff "$dir" || true
		fail "packer fmt -check $dir"
	fi
done
step_done "packer fmt"

# --- 2. packer validate ---------------------------------------------------------------------------
step "packer validate"
validate() { # DESCRIPTION ARGS...
	local what="$1" out
	shift
	if out="$(cd "$REPO" && packer validate "$@" images/ 2>&1)"; then
		echo "ok: $what"
	else
		printf '%s\n' "$out"
		fail "packer validate ($what)"
	fi
}
validate "both sources, ci-dummy variables" -var-file=images/vars/ci-dummy.pkrvars.hcl
validate "amazon-ebs only, no GCE project" -only=amazon-ebs.worker -var-file=images/vars/ci-dummy.pkrvars.hcl -var gcp_project_id=
validate "googlecompute only" -only=googlecompute.worker -var-file=images/vars/ci-dummy.pkrvars.hcl
validate "several workers, shared build root" -var-file=images/vars/ci-dummy.pkrvars.hcl \
	-var workers_per_instance=4 -var buildroot_publish_command= -var buildroot_mount_source=fs-0123.efs.example.invalid:/
PKR_VAR_db_password=ci-dummy-1 PKR_VAR_django_secret_key=ci-dummy-2 PKR_VAR_symmetric_secret_key=ci-dummy-3 \
	validate "vars/example.pkrvars.hcl, secrets from PKR_VAR_*" -var-file=images/vars/example.pkrvars.hcl
validate "no drain agent (supervisord for several workers)" -var-file=images/vars/ci-dummy.pkrvars.hcl \
	-var drain_agent=off -var workers_per_instance=3 -var max_builds=10 -var when_workers_exit=poweroff
validate "drain agent forced to gce, fast polls" -var-file=images/vars/ci-dummy.pkrvars.hcl -var drain_agent=gce -var drain_poll_seconds=2
if out="$(cd "$REPO" && packer validate -var-file=images/vars/ci-dummy.pkrvars.hcl -var drain_agent=yes images/ 2>&1)"; then
	fail "packer validate accepted drain_agent=yes"
elif printf '%s' "$out" | grep -q "The drain_agent must be auto, aws, gce, none or off"; then
	echo "ok: drain_agent=yes is rejected"
else
	printf '%s\n' "$out"
	fail "packer validate rejected drain_agent=yes without the expected message"
fi
# The variable validations must reject what the steps cannot use.
if out="$(cd "$REPO" && packer validate -var-file=images/vars/ci-dummy.pkrvars.hcl -var 'pool=my pool' images/ 2>&1)"; then
	fail "packer validate accepted a pool name with a space"
elif printf '%s' "$out" | grep -q "The pool may only contain"; then
	echo "ok: a pool name with a space is rejected"
else
	printf '%s\n' "$out"
	fail "packer validate rejected a bad pool name without the expected message"
fi
step_done "packer validate"

# --- 3. shellcheck ------------------------------------------------------------------------------
step "shellcheck"
# examples/traces belongs to the simulator, not to images/.
mapfile -t scripts < <(cd "$REPO" && find images examples -path examples/traces -prune -o -type f \( -name '*.sh' -o -name '*.bash' \) -print | sort)
scripts+=(images/scripts/vespene-drain-agent)
if (cd "$REPO" && shellcheck -x "${scripts[@]}"); then
	echo "ok: ${#scripts[@]} scripts: ${scripts[*]}"
else
	fail "shellcheck"
fi
for py in "$HERE/scripts/exit-when-all-exited.py" "$HERE/tests/fake_imds.py" "$HERE/tests/fake_gce_metadata.py"; do
	if python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$py"; then
		echo "ok: ${py#"$REPO"/} parses"
	else
		fail "${py#"$REPO"/} does not parse"
	fi
done
step_done "shellcheck"

# --- 4. terraform fmt ---------------------------------------------------------------------------
step "terraform fmt -check"
if command -v terraform >/dev/null 2>&1; then
	if (cd "$REPO" && terraform fmt -check -recursive -diff examples/ 2>/dev/null); then
		echo "ok: examples/"
	else
		fail "terraform fmt -check examples/"
	fi
else
	echo "SKIPPED: terraform is not installed; examples/*.tf formatting NOT checked"
fi
step_done "terraform fmt"

# --- 5. the checklist checks --------------------------------------------------------------------
step "checklist tests as uid $(id -u)"
if bash "$HERE/tests/test-checks.sh"; then :; else fail "images/tests/test-checks.sh (uid $(id -u))"; fi
step_done "checklist tests as uid $(id -u)"

if [ "$(id -u)" = 0 ] && [ "${IMAGES_CI_SKIP_NONROOT:-0}" != 1 ]; then
	step "checklist tests as nobody"
	if ! command -v runuser >/dev/null 2>&1 || ! runuser -u nobody -- test -r "$HERE/tests/test-checks.sh"; then
		echo "SKIPPED: cannot run as nobody (no runuser, or the checkout is not readable by nobody)"
	elif runuser -u nobody -- env HOME=/tmp TMPDIR=/tmp PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin bash "$HERE/tests/test-checks.sh"; then
		:
	else
		fail "images/tests/test-checks.sh (as nobody)"
	fi
	step_done "checklist tests as nobody"
fi

# --- 6. the drain agent ----------------------------------------------------------------------------
step "drain agent tests"
if timeout 300 bash "$HERE/tests/test-drain-agent.sh"; then :; else fail "images/tests/test-drain-agent.sh"; fi
step_done "drain agent tests"

printf '\n'
if [ ${#FAILED[@]} -gt 0 ]; then
	printf 'images/ci-check.sh: %d failure(s):\n' "${#FAILED[@]}"
	printf '  - %s\n' "${FAILED[@]}"
	exit 1
fi
echo "images/ci-check.sh: all checks passed"
