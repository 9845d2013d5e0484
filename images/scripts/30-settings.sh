#!/usr/bin/env bash
# Step 30 (points 2, 3, 4, 8 and the file-server half of 9): /etc/vespene/settings.d as on any
# other worker, the build root, the sudo rule, and how build roots outlive the instance.
STEP_NAME=settings
# shellcheck source=lib.sh
. "${VESPENE_IMAGE_SRC:-$(dirname "$0")}/lib.sh"
require_root_or_root_mode
require_var VESPENE_BUILD_ROOT build_root
require_var VESPENE_SUDO_USER sudo_user
require_var VESPENE_DB_HOST db_host
require_var VESPENE_DB_NAME db_name
require_var VESPENE_DB_USER db_user
require_var VESPENE_DB_PASSWORD db_password
require_var VESPENE_DJANGO_SECRET_KEY django_secret_key
require_var VESPENE_SYMMETRIC_SECRET_KEY symmetric_secret_key

# /etc/vespene belongs to the worker user: Vespene's worker creates /etc/vespene/worker_id on its
# first build. Nobody else may list it.
mkdirp "$SETTINGS_DIR"
chmod 0750 "$ROOT/etc/vespene" "$ROOT$SETTINGS_DIR"
own "$APP_USER:$APP_USER" "$ROOT/etc/vespene" "$ROOT$SETTINGS_DIR"

settings_file() { # MODE NAME: stdin -> settings.d/NAME owned by the worker user
	write_file "$1" "$SETTINGS_DIR/$2"
	own "$APP_USER:$APP_USER" "$ROOT$SETTINGS_DIR/$2"
}

# --- point 2: database.py and secrets.py, mode 0600 --------------------------------------------
# Builds run as the sudo user, i.e. arbitrary code: they must not be able to read these.
settings_file 0600 database.py <<END
# Written by images/scripts/30-settings.sh (point 2). Contains the database password: mode 0600.
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.postgresql',
        'NAME': $(py_literal "$VESPENE_DB_NAME"),
        'USER': $(py_literal "$VESPENE_DB_USER"),
        'PASSWORD': $(py_literal "$VESPENE_DB_PASSWORD"),
        'HOST': $(py_literal "$VESPENE_DB_HOST"),
        'PORT': $(py_literal "${VESPENE_DB_PORT:-5432}"),
        'ATOMIC_REQUESTS': True,
        'OPTIONS': {'sslmode': $(py_literal "${VESPENE_DB_SSLMODE:-prefer}")},
    }
}
END

# The console's keys: SYMETRIC_SECRET_KEY (Vespene's spelling) decrypts the SSH keys and secrets
# stored in the database; a worker with another key cannot use any of them.
fernet="$VESPENE_SYMMETRIC_SECRET_KEY"
case "$fernet" in
"b'"*"'" | 'b"'*'"') fernet="${fernet:2:${#fernet}-3}" ;;
esac
settings_file 0600 secrets.py <<END
# Written by images/scripts/30-settings.sh (point 2): the console's keys. Mode 0600.
SECRET_KEY = $(py_literal "$VESPENE_DJANGO_SECRET_KEY")
DJANGO_SECRET_KEY = SECRET_KEY
SYMETRIC_SECRET_KEY = $(py_literal "$fernet").encode('ascii')
END
unset fernet

# --- points 3 and 9: workers.py ------------------------------------------------------------------
# FILESERVING_ENABLED: the console would link build roots to this instance's built-in file
# server, which only runs with the web interface (point 9) and dies with the instance anyway.
# FILESERVING_HOSTNAME stays empty so each worker registers its own hostname, which is how the
# cloud executors tell which instance runs a build.
settings_file 0640 workers.py <<END
# Written by images/scripts/30-settings.sh (points 3 and 9).
BUILD_ROOT = $(py_literal "$VESPENE_BUILD_ROOT")
FILESERVING_ENABLED = False
FILESERVING_HOSTNAME = ""
END

# --- points 3 and 4: the build root --------------------------------------------------------------
# Owned by the worker user (it creates BUILD_ROOT/<build id>) and group vespene-build (the sudo
# user writes there); setgid so every build directory inherits the group. Recreated at boot by
# tmpfiles.d in case a mount or a wipe removed it.
mkdirp "$VESPENE_BUILD_ROOT"
chmod 2770 "$ROOT$VESPENE_BUILD_ROOT"
own "$APP_USER:$BUILD_GROUP" "$ROOT$VESPENE_BUILD_ROOT"
printf 'd %s 2770 %s %s -\n' "$VESPENE_BUILD_ROOT" "$APP_USER" "$BUILD_GROUP" | write_file 0644 "$TMPFILES_CONF"

# --- point 4: the worker may become the sudo user, without a password --------------------------
# Vespene runs each build as `sudo -Snk -u SUDO_USER script`.
write_file 0440 "$SUDOERS_FILE" <<END
# Written by images/scripts/30-settings.sh (point 4): Vespene's sudo isolation.
Defaults:$APP_USER !requiretty
$APP_USER ALL=($VESPENE_SUDO_USER) NOPASSWD: ALL
END
if ! root_mode; then
	visudo -cf "$SUDOERS_FILE" >/dev/null || die "visudo rejects $SUDOERS_FILE"
fi

# --- point 8: build roots outlive the instance ----------------------------------------------------
publish="${VESPENE_PUBLISH_COMMAND:-}"
if [ -n "${VESPENE_PUBLISH_COMMAND_B64:-}" ]; then
	publish="$(printf '%s' "$VESPENE_PUBLISH_COMMAND_B64" | base64 -d)"
fi
rm -f "$ROOT$SETTINGS_DIR/triggers.py"
if [ -n "$publish" ]; then
	# Vespene's command trigger renders the string with Jinja ({{ build.working_dir }}, ...) and
	# runs it as the worker user after every build, successful or not.
	settings_file 0640 triggers.py <<END
# Written by images/scripts/30-settings.sh (point 8): copy every build root off the instance.
# PLUGIN_CONFIGURATION comes from Vespene's config/plugins.py, loaded before settings.d.
VESPENE_IMAGE_PUBLISH = ["vespene.plugins.triggers.command", $(py_literal "$publish")]
PLUGIN_CONFIGURATION["success_triggers"]["vespene_image_publish"] = VESPENE_IMAGE_PUBLISH
PLUGIN_CONFIGURATION["failure_triggers"]["vespene_image_publish"] = VESPENE_IMAGE_PUBLISH
END
	log "build roots are published by a trigger after every build"
fi
if [ -n "${VESPENE_BUILDROOT_MOUNT_SOURCE:-}" ]; then
	touch "$ROOT/etc/fstab"
	# Drop an earlier line for the same mount point, then add ours.
	awk -v mp="$VESPENE_BUILD_ROOT" '$2 != mp' "$ROOT/etc/fstab" >"$ROOT/etc/fstab.vespene-new"
	printf '%s %s %s %s 0 0\n' "$VESPENE_BUILDROOT_MOUNT_SOURCE" "$VESPENE_BUILD_ROOT" \
		"${VESPENE_BUILDROOT_MOUNT_FSTYPE:-nfs4}" "${VESPENE_BUILDROOT_MOUNT_OPTIONS:-_netdev,nofail,noatime}" >>"$ROOT/etc/fstab.vespene-new"
	chmod 0644 "$ROOT/etc/fstab.vespene-new"
	mv -f "$ROOT/etc/fstab.vespene-new" "$ROOT/etc/fstab"
	log "build root is a shared filesystem: ${VESPENE_BUILDROOT_MOUNT_FSTYPE:-nfs4} mounted at $VESPENE_BUILD_ROOT"
fi

log "settings.d written (database.py, secrets.py, workers.py${publish:+, triggers.py}); build root $VESPENE_BUILD_ROOT"
