#!/usr/bin/env bash
# Step 20 (point 1, and the users of points 4 and 5): the worker user, the build (sudo) user, and
# Vespene itself checked out at exactly the commit the console runs, with its Python packages.
STEP_NAME=vespene
# shellcheck source=lib.sh
. "${VESPENE_IMAGE_SRC:-$(dirname "$0")}/lib.sh"
require_root_or_root_mode
require_var VESPENE_VERSION vespene_version
require_var VESPENE_SOURCE vespene_source
require_var VESPENE_SUDO_USER sudo_user

# --- users -----------------------------------------------------------------------------------
# vespene: runs the worker, owns /etc/vespene (the worker writes /etc/vespene/worker_id) and the
# logs. The sudo user: runs the build scripts (Vespene's sudo isolation). Both are members of
# vespene-build, the group that owns the build root.
add_passwd_entry() { # ROOT mode only: name uid gid home
	touch "$ROOT/etc/passwd"
	grep -q "^$1:" "$ROOT/etc/passwd" || printf '%s:x:%s:%s::%s:/bin/sh\n' "$1" "$2" "$3" "$4" >>"$ROOT/etc/passwd"
}
add_group_entry() { # ROOT mode only: name gid members
	touch "$ROOT/etc/group"
	grep -q "^$1:" "$ROOT/etc/group" || printf '%s:x:%s:%s\n' "$1" "$2" "$3" >>"$ROOT/etc/group"
}

if root_mode; then
	mkdir -p "$ROOT/etc"
	uid="$(id -u)"
	gid="$(id -g)"
	# The caller's ids stand for vespene and for the group owning the build root (the caller owns
	# every file it creates); the sudo user gets ids of its own so that "the sudo user cannot read
	# the database password" is a real distinction in the scratch tree.
	add_passwd_entry "$APP_USER" "$uid" "$gid" "$APP_HOME"
	add_passwd_entry "$VESPENE_SUDO_USER" "$((uid + 1))" "$((gid + 1))" "/home/$VESPENE_SUDO_USER"
	add_group_entry "$APP_USER" "$gid" ""
	add_group_entry "$VESPENE_SUDO_USER" "$((gid + 1))" ""
	add_group_entry "$BUILD_GROUP" "$gid" "$APP_USER,$VESPENE_SUDO_USER"
	mkdir -p "$ROOT$APP_HOME" "$ROOT/home/$VESPENE_SUDO_USER"
else
	getent group "$BUILD_GROUP" >/dev/null || groupadd --system "$BUILD_GROUP"
	if ! getent passwd "$APP_USER" >/dev/null; then
		useradd --system --user-group --create-home --home-dir "$APP_HOME" --shell /bin/bash "$APP_USER"
	fi
	if ! getent passwd "$VESPENE_SUDO_USER" >/dev/null; then
		useradd --user-group --create-home --shell /bin/bash "$VESPENE_SUDO_USER"
	fi
	usermod -a -G "$BUILD_GROUP" "$APP_USER"
	usermod -a -G "$BUILD_GROUP" "$VESPENE_SUDO_USER"
fi
chmod 0750 "$ROOT$APP_HOME"
own "$APP_USER:$APP_USER" "$ROOT$APP_HOME"

# --- Vespene at the console's version ----------------------------------------------------------
# Kept as a git checkout so point 1 can be verified on any instance: HEAD must be the requested
# ref and no tracked file may differ from it. Owned by root: builds (and the worker) cannot
# modify the code they run under.
rm -rf "$ROOT$VESPENE_DIR"
mkdir -p "$(dirname "$ROOT$VESPENE_DIR")"
git clone --quiet "$VESPENE_SOURCE" "$ROOT$VESPENE_DIR" || die "git clone of VESPENE_SOURCE (Packer variable vespene_source) failed"
if ! git -C "$ROOT$VESPENE_DIR" rev-parse --quiet --verify "$VESPENE_VERSION^{commit}" >/dev/null; then
	git -C "$ROOT$VESPENE_DIR" fetch --quiet origin "$VESPENE_VERSION" ||
		die "VESPENE_VERSION (Packer variable vespene_version) '$VESPENE_VERSION' is neither a tag, a branch nor a commit of vespene_source"
	VESPENE_VERSION_REF=FETCH_HEAD
fi
git -C "$ROOT$VESPENE_DIR" -c advice.detachedHead=false checkout --quiet --detach "${VESPENE_VERSION_REF:-$VESPENE_VERSION}"
commit="$(git -C "$ROOT$VESPENE_DIR" rev-parse HEAD)"
[ -f "$ROOT$VESPENE_DIR/manage.py" ] || die "vespene_source at $VESPENE_VERSION has no manage.py: is it Vespene?"
own -R root:root "$ROOT$VESPENE_DIR"
chmod -R go-w "$ROOT$VESPENE_DIR"

base_python="${VESPENE_BASE_PYTHON:-/usr/bin/python3}"
rm -rf "$ROOT$VENV_DIR"
if root_mode; then
	"$base_python" -m venv --without-pip "$ROOT$VENV_DIR"
	log "ROOT mode: not installing requirements.txt into $VENV_DIR"
else
	"$base_python" -m venv "$ROOT$VENV_DIR"
	"$ROOT$VENV_DIR/bin/pip" install --quiet --upgrade pip wheel
	"$ROOT$VENV_DIR/bin/pip" install --quiet -r "$ROOT$VESPENE_DIR/requirements.txt"
	"$ROOT$VENV_DIR/bin/python3" -m compileall -q "$ROOT$VESPENE_DIR/vespene" >/dev/null || true
	own -R root:root "$ROOT$VENV_DIR"
fi

log "Vespene $VESPENE_VERSION (commit $commit) in $VESPENE_DIR, Python environment in $VENV_DIR"
