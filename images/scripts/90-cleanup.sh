#!/usr/bin/env bash
# Step 90: remove what must not be shared by every instance booted from the image, and what the
# bake left behind. Runs before the checks, which verify the result.
STEP_NAME=cleanup
# shellcheck source=lib.sh
. "${VESPENE_IMAGE_SRC:-$(dirname "$0")}/lib.sh"
require_root_or_root_mode

# Vespene's worker creates /etc/vespene/worker_id on its first build and registers under it; a
# baked one would make every instance the same worker row (point 5 checks it is absent).
rm -f "$ROOT/etc/vespene/worker_id"
# Logs of the bake itself, so the first lines in /var/log/vespene are the instance's own.
find "$ROOT$LOG_DIR" -mindepth 1 -delete 2>/dev/null || true
rm -f "$ROOT/root/.bash_history" "$ROOT/home/"*/.bash_history

if root_mode; then
	log "ROOT mode: skipping apt and journal cleanup"
	exit 0
fi
apt-get clean
rm -rf /var/lib/apt/lists/*
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
rm -rf /tmp/vespene-image
log "cleaned"
