#!/usr/bin/env bash
# Step 10 (point 10, and the packages every other point relies on): install from the Debian
# mirror once, at bake time, so no build has to fetch its tools from the internet.
STEP_NAME=packages
# shellcheck source=lib.sh
. "${VESPENE_IMAGE_SRC:-$(dirname "$0")}/lib.sh"
require_root_or_root_mode

# What Vespene's worker itself needs: python (venv + headers to build psycopg2 from the console's
# requirements.txt), git (install from source, SCM checkouts), ssh-agent (the worker runs under
# it), sudo (isolation), supervisor (several workers per instance), rsyslog (point 7),
# postgresql-client (the boot-time database check, point 6).
base_packages="ca-certificates git openssh-client sudo python3 python3-venv python3-dev gcc libpq-dev libssl-dev libffi-dev postgresql-client supervisor rsyslog"
# The drain agent talks to the metadata server with curl; on AWS it acknowledges with the aws CLI.
base_packages="$base_packages curl"
if [ "$(drain_cloud)" = aws ]; then
	base_packages="$base_packages awscli"
fi
if [ -n "${VESPENE_BUILDROOT_MOUNT_SOURCE:-}" ]; then
	base_packages="$base_packages nfs-common"
fi
# shellcheck disable=SC2206 # word splitting of the space-separated lists is intended
packages=($base_packages ${VESPENE_EXTRA_PACKAGES:-})

if root_mode; then
	log "ROOT mode: not running apt-get; would install: ${packages[*]}"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# cloud-init may still be running apt on the build VM's first boot: wait for its lock.
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${packages[@]}"

# Debian enables its own supervisord (/etc/supervisor/supervisord.conf); the worker unit runs a
# dedicated one instead, so the default instance would only be an idle daemon.
systemctl disable --now supervisor.service >/dev/null 2>&1 || true
systemctl enable rsyslog.service
log "installed: ${packages[*]}"
