#!/usr/bin/env bash
# vespene-image-check: verifies the ten points of Vespene's "Image Preparation" checklist on a
# worker image, one PASS/FAIL line per point, exit status 1 if any point fails.
#
# The same script runs
#   - as the last provisioner of the Packer bake (it fails the bake),
#   - on a live instance (installed as /usr/local/sbin/vespene-image-check),
#   - at boot, as `--point 6 --live-db --wait N`, before the worker starts,
#   - against a scratch tree in CI (--root DIR, see images/tests/test-checks.sh).
#
# What the image should contain comes from the VESPENE_* environment variables (the bake passes
# the Packer variables) or, for each one not set, from /etc/vespene/image.env written at bake
# time. Secrets are read from settings.d by the checks that need them and are never printed.

set -uo pipefail
set +x

usage() {
	cat <<'EOF'
usage: vespene-image-check [--root DIR] [--point N]... [--live-db] [--wait SECONDS] [--manifest FILE]

  --root DIR       check the tree under DIR instead of this machine (checks that need the running
                   system, e.g. runuser or rsyslogd -N1, are skipped and say so)
  --point N        check only point N (1-10); repeat for several
  --live-db        point 6 also connects to the database (as the worker would) and requires the
                   pool to exist in worker_pools
  --wait SECONDS   with --live-db: retry the connection for up to SECONDS (boot: network may lag)
  --manifest FILE  expectations file (default ROOT/etc/vespene/image.env)
EOF
}

ROOT="${ROOT:-}"
LIVE_DB="${VESPENE_CHECK_LIVE_DB:-0}"
case "$LIVE_DB" in true | 1 | yes) LIVE_DB=1 ;; *) LIVE_DB=0 ;; esac
WAIT=0
POINTS=()
MANIFEST_ARG=""
while [ $# -gt 0 ]; do
	case "$1" in
	--root)
		ROOT="${2:?--root needs a directory}"
		shift 2
		;;
	--point)
		case "${2:-}" in
		[1-9] | 10) POINTS+=("$2") ;;
		*)
			echo "vespene-image-check: --point takes 1..10, got '${2:-}'" >&2
			exit 2
			;;
		esac
		shift 2
		;;
	--live-db)
		LIVE_DB=1
		shift
		;;
	--wait)
		WAIT="${2:-}"
		case "$WAIT" in
		'' | *[!0-9]*)
			echo "vespene-image-check: --wait takes a whole number of seconds, got '$WAIT'" >&2
			exit 2
			;;
		esac
		shift 2
		;;
	--manifest)
		MANIFEST_ARG="${2:?--manifest needs a file}"
		shift 2
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "vespene-image-check: unknown argument '$1'" >&2
		usage >&2
		exit 2
		;;
	esac
done
ROOT="${ROOT%/}"
if [ -n "$ROOT" ] && [ ! -d "$ROOT" ]; then
	echo "vespene-image-check: --root $ROOT is not a directory" >&2
	exit 2
fi
if [ ${#POINTS[@]} -eq 0 ]; then POINTS=(1 2 3 4 5 6 7 8 9 10); fi

# The image layout (kept in step with images/scripts/lib.sh).
APP_USER="vespene"
VESPENE_DIR="/opt/vespene"
PYTHON="/opt/vespene-venv/bin/python3"
SETTINGS_DIR="/etc/vespene/settings.d"
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
WORKER_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MANIFEST="${MANIFEST_ARG:-$ROOT/etc/vespene/image.env}"

PY="${VESPENE_CHECK_PYTHON:-}"
if [ -z "$PY" ] && [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; fi
if [ -z "$PY" ]; then PY="$(command -v python3 || true)"; fi
if [ -z "$PY" ]; then
	echo "vespene-image-check: python3 is required" >&2
	exit 2
fi

# --- expectations ---------------------------------------------------------------------------
EXPECT_KEYS="VESPENE_POOL VESPENE_VERSION VESPENE_BUILD_ROOT VESPENE_SUDO_USER VESPENE_WORKERS_PER_INSTANCE
VESPENE_MAX_BUILDS VESPENE_MAX_WAIT_MINUTES VESPENE_WHEN_WORKERS_EXIT VESPENE_ON_DB_UNREACHABLE
VESPENE_LOG_TARGET VESPENE_PUBLISH_COMMAND_B64 VESPENE_BUILDROOT_MOUNT_SOURCE VESPENE_BUILD_TOOLS
VESPENE_EXTRA_PACKAGES VESPENE_DRAIN_AGENT VESPENE_DRAIN_POLL_SECONDS VESPENE_DRAIN_HEARTBEAT_SECONDS
VESPENE_DRAIN_HOOK_NAME"
if [ -z "${VESPENE_PUBLISH_COMMAND_B64+x}" ] && [ -n "${VESPENE_PUBLISH_COMMAND+x}" ]; then
	VESPENE_PUBLISH_COMMAND_B64="$(printf '%s' "$VESPENE_PUBLISH_COMMAND" | base64 -w0)"
fi
declare -A EXPECT=()
if [ -r "$MANIFEST" ]; then
	while IFS= read -r line || [ -n "$line" ]; do
		case "$line" in '#'* | '') continue ;; esac
		key="${line%%=*}"
		case " $(echo "$EXPECT_KEYS" | tr '\n' ' ') " in
		*" $key "*)
			EXPECT[$key]="${line#*=}"
			;;
		esac
	done <"$MANIFEST"
fi
for key in $EXPECT_KEYS; do
	if [ -n "${!key+x}" ]; then
		EXPECT[$key]="${!key}"
	fi
done
# The bake passes drain_agent as given ("auto" follows the source being built); the manifest
# holds the resolved value. Without either the image predates the agent: no agent expected.
case "${EXPECT[VESPENE_DRAIN_AGENT]:-}" in
auto)
	case "${VESPENE_BUILD_SOURCE:-}" in
	amazon-ebs) EXPECT[VESPENE_DRAIN_AGENT]=aws ;;
	googlecompute) EXPECT[VESPENE_DRAIN_AGENT]=gce ;;
	*) EXPECT[VESPENE_DRAIN_AGENT]="auto (unresolved: VESPENE_BUILD_SOURCE is '${VESPENE_BUILD_SOURCE:-}')" ;;
	esac
	;;
'') EXPECT[VESPENE_DRAIN_AGENT]=off ;;
esac
expect() { printf '%s' "${EXPECT[$1]:-}"; }
have_expect() { [ -n "${EXPECT[$1]+x}" ]; }

# --- the Python helper: parsing and permission logic shared by the checks ------------------------
# Subcommands print results on stdout; errors on stderr name files and keys, never values.
read -r -d '' PYHELPER <<'PYEOF'
import base64, collections, grp, json, os, pwd, re, shlex, stat, subprocess, sys, time

ROOT = os.environ.get("CHECK_ROOT", "")
SETTINGS = ROOT + "/etc/vespene/settings.d"

def die(code, msg):
    sys.stderr.write(msg + "\n")
    sys.exit(code)

def load_settings():
    ns = {"OrderedDict": collections.OrderedDict}
    # What Vespene's config/plugins.py defines before settings.d is loaded.
    ns["PLUGIN_CONFIGURATION"] = {k: collections.OrderedDict() for k in (
        "pre_triggers", "success_triggers", "failure_triggers", "scm", "isolation",
        "authorization", "output", "secrets", "organizations", "variables",
        "autoscaling_executors", "autoscaling_planners")}
    if not os.path.isdir(SETTINGS):
        die(4, "%s does not exist" % SETTINGS[len(ROOT):])
    for name in sorted(os.listdir(SETTINGS)):
        if not name.endswith(".py"):
            continue
        path = os.path.join(SETTINGS, name)
        try:
            with open(path) as fh:
                code = compile(fh.read(), path, "exec")
            exec(code, ns)
        except SyntaxError as e:
            die(4, "settings.d/%s: syntax error on line %s" % (name, e.lineno))
        except Exception as e:
            die(4, "settings.d/%s: %s while loading it" % (name, type(e).__name__))
    return ns

def users():
    """name -> (uid, gid, groups) from ROOT's passwd/group files, or from the system."""
    if ROOT:
        pw, gr = {}, {}
        try:
            for line in open(ROOT + "/etc/passwd"):
                f = line.rstrip("\n").split(":")
                if len(f) >= 4:
                    pw[f[0]] = (int(f[2]), int(f[3]))
            for line in open(ROOT + "/etc/group"):
                f = line.rstrip("\n").split(":")
                if len(f) >= 4:
                    gr[f[0]] = (int(f[2]), [m for m in f[3].split(",") if m])
        except OSError:
            pass
        out = {}
        for name, (uid, gid) in pw.items():
            groups = {gid} | {g for (g, members) in gr.values() if name in members}
            out[name] = (uid, gid, groups)
        return out, {n: g for n, (g, _) in gr.items()}
    out = {}
    for p in pwd.getpwall():
        groups = set(os.getgrouplist(p.pw_name, p.pw_gid))
        out[p.pw_name] = (p.pw_uid, p.pw_gid, groups)
    return out, {g.gr_name: g.gr_gid for g in grp.getgrall()}

def can(user, perm, path):
    """Mode-bit evaluation of `user` reaching `path` (x on every ancestor) with `perm` (r/w/x/rw...)."""
    us, _ = users()
    if user not in us:
        return "user %s does not exist" % user
    uid, gid, groups = us[user]
    def allowed(st, p):
        bits = {"r": 4, "w": 2, "x": 1}[p]
        if st.st_uid == uid:
            return bool((st.st_mode >> 6) & bits)
        if st.st_gid in groups:
            return bool((st.st_mode >> 3) & bits)
        return bool(st.st_mode & bits)
    parts = [p for p in path.split("/") if p]
    cur = ""
    for comp in parts[:-1]:
        cur += "/" + comp
        try:
            st = os.stat(ROOT + cur)
        except OSError:
            return "%s does not exist" % cur
        if not allowed(st, "x"):
            return "%s cannot enter %s (mode %o, owner %d:%d)" % (user, cur, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    try:
        st = os.stat(ROOT + path)
    except OSError:
        return "%s does not exist" % path
    needed = perm + ("x" if stat.S_ISDIR(st.st_mode) and "w" in perm else "")
    for p in needed:
        if not allowed(st, p):
            return "%s has no %s permission on %s (mode %o, owner %d:%d)" % (user, p, path, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return ""

def unit_values(path, section, key):
    vals, cur = [], None
    for raw in open(path):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = line[1:-1]
            continue
        if cur == section and "=" in line:
            k, v = line.split("=", 1)
            if k.strip() == key:
                vals.append(v.strip())
    return vals

def ini(path):
    import configparser
    cp = configparser.RawConfigParser(strict=False, inline_comment_prefixes=(";",))
    cp.read(path)
    return cp

def fernet_ok(key):
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    try:
        return len(base64.urlsafe_b64decode(key)) == 32
    except Exception:
        return False

def secrets(ns):
    vals = []
    try:
        vals.append(str(ns["DATABASES"]["default"]["PASSWORD"]))
    except Exception:
        pass
    for k in ("SECRET_KEY", "SYMETRIC_SECRET_KEY"):
        v = ns.get(k)
        if isinstance(v, bytes):
            v = v.decode("ascii", "replace")
        if v:
            vals.append(str(v))
    return [v for v in vals if len(v) >= 6]

def needles(ns):
    """Each secret as raw bytes and as it looks inside a Python string literal (repr escapes)."""
    out = set()
    for v in secrets(ns):
        out.add(v.encode())
        out.add(repr(v)[1:-1].encode())
    return [n for n in out if n]

def cmd_settings(args):
    ns = load_settings()
    expr = args[0]
    try:
        val = eval(expr, {}, ns)
    except Exception:
        die(3, "%s is not set" % expr)
    if isinstance(val, (dict, list, tuple)):
        print(json.dumps(val, default=str))
    elif isinstance(val, bytes):
        print(val.decode("ascii", "replace"))
    else:
        print(val)

def cmd_settings_complete(args):
    """Point 2: every key a worker needs, well-formed; files holding secrets are not world-readable."""
    ns = load_settings()
    sudo_user = args[0]
    problems = []
    db = ns.get("DATABASES", {}).get("default") if isinstance(ns.get("DATABASES"), dict) else None
    if not isinstance(db, dict):
        problems.append("DATABASES['default'] is not set")
    else:
        if "postgresql" not in str(db.get("ENGINE", "")):
            problems.append("DATABASES['default']['ENGINE'] is not django.db.backends.postgresql")
        for k in ("NAME", "USER", "HOST", "PASSWORD"):
            if not db.get(k):
                problems.append("DATABASES['default']['%s'] is empty" % k)
    if not ns.get("SECRET_KEY"):
        problems.append("SECRET_KEY is not set")
    if not ns.get("SYMETRIC_SECRET_KEY"):
        problems.append("SYMETRIC_SECRET_KEY is not set (the console's key: cloaked SSH keys and secrets cannot be read)")
    elif not fernet_ok(ns["SYMETRIC_SECRET_KEY"]):
        problems.append("SYMETRIC_SECRET_KEY is not a Fernet key")
    if not ns.get("BUILD_ROOT"):
        problems.append("BUILD_ROOT is not set")
    for name in sorted(os.listdir(SETTINGS)):
        path = os.path.join(SETTINGS, name)
        text = open(path, "rb").read()
        if name not in ("database.py", "secrets.py") and not any(n in text for n in needles(ns)):
            continue
        st = os.stat(path)
        if st.st_mode & 0o004:
            problems.append("settings.d/%s holds a secret and is world-readable (mode %o)" % (name, stat.S_IMODE(st.st_mode)))
        elif sudo_user and not can(sudo_user, "r", path[len(ROOT):]):
            problems.append("settings.d/%s holds a secret and the sudo user %s (builds) can read it" % (name, sudo_user))
    # A secret anywhere else on the image: bake leftovers, logs, shell histories.
    for needle in needles(ns):
        for top in ("/tmp", "/var/tmp", "/var/log", "/root", "/home", "/etc", "/var/lib/vespene", "/var/lib/cloud", "/opt/vespene"):
            base = ROOT + top
            for dirpath, dirnames, filenames in os.walk(base):
                if os.path.realpath(dirpath) == os.path.realpath(SETTINGS):
                    continue
                for fn in filenames:
                    p = os.path.join(dirpath, fn)
                    try:
                        if os.path.islink(p) or os.path.getsize(p) > 64 * 1024 * 1024:
                            continue
                        with open(p, "rb") as fh:
                            if needle in fh.read():
                                problems.append("a secret from settings.d also appears in %s" % p[len(ROOT):])
                    except OSError:
                        continue
    print("\n".join(sorted(set(problems))))

def cmd_can(args):
    msg = can(args[0], args[1], args[2])
    if msg:
        print(msg)
        sys.exit(1)

def cmd_unit(args):
    path, section, key = args
    if not os.path.exists(path):
        die(3, "missing")
    for v in unit_values(path, section, key):
        print(v)

def cmd_ini(args):
    path = args[0]
    cp = ini(path)
    if args[1] == "--sections":
        print("\n".join(cp.sections()))
        return
    section, key = args[1], args[2]
    if not cp.has_section(section) or not cp.has_option(section, key):
        die(3, "missing")
    print(cp.get(section, key))

def cmd_triggers(args):
    """Point 8: the command trigger in both success and failure triggers; prints its command."""
    ns = load_settings()
    pc = ns.get("PLUGIN_CONFIGURATION", {})
    found = {}
    for kind in ("success_triggers", "failure_triggers"):
        for name, spec in (pc.get(kind) or {}).items():
            if isinstance(spec, (list, tuple)) and len(spec) >= 2 and spec[0] == "vespene.plugins.triggers.command" and str(spec[1]).strip():
                found.setdefault(kind, []).append(str(spec[1]))
    missing = [k for k in ("success_triggers", "failure_triggers") if k not in found]
    if missing:
        die(1, "no vespene.plugins.triggers.command entry in %s" % " and ".join(missing))
    for c in sorted(set(found["success_triggers"]) & set(found["failure_triggers"])) or found["success_triggers"]:
        print(base64.b64encode(c.encode()).decode())

def cmd_dbprobe(args):
    """Point 6 live: connect like the worker (settings.d) and look the pool up in worker_pools."""
    pool, wait = args[0], int(args[1])
    ns = load_settings()
    try:
        db = ns["DATABASES"]["default"]
    except Exception:
        die(1, "DATABASES['default'] is not set in settings.d")
    env = dict(os.environ)
    env.update({
        "PGHOST": str(db.get("HOST") or "localhost"),
        "PGPORT": str(db.get("PORT") or "5432"),
        "PGDATABASE": str(db.get("NAME") or ""),
        "PGUSER": str(db.get("USER") or ""),
        "PGPASSWORD": str(db.get("PASSWORD") or ""),
        "PGCONNECT_TIMEOUT": "5",
        "PGSSLMODE": str((db.get("OPTIONS") or {}).get("sslmode", "prefer")),
        "PGAPPNAME": "vespene-image-check",
    })
    where = "%s@%s:%s/%s" % (env["PGUSER"], env["PGHOST"], env["PGPORT"], env["PGDATABASE"])
    query = "SELECT count(*) FROM worker_pools WHERE name = :'pool';\n"
    deadline = time.time() + wait
    last = ""
    while True:
        try:
            r = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-v", "pool=" + pool],
                               input=query, env=env, capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                n = r.stdout.strip()
                if n == "1":
                    print("connected to %s; pool %s exists in worker_pools" % (where, pool))
                    return
                die(1, "connected to %s but pool %s is not in worker_pools (the worker would wait for it forever)" % (where, pool))
            last = (r.stderr.strip().splitlines() or ["psql exited with %d" % r.returncode])[0]
        except FileNotFoundError:
            die(1, "psql is not installed (postgresql-client)")
        except subprocess.TimeoutExpired:
            last = "psql timed out"
        if time.time() >= deadline:
            break
        time.sleep(min(5, max(0.0, deadline - time.time())))
    for s in secrets(ns):
        last = last.replace(s, "<secret>")
    die(1, "cannot reach the database %s%s: %s" % (where, " within %ds" % wait if wait else "", last))

cmds = {"settings": cmd_settings, "settings-complete": cmd_settings_complete, "can": cmd_can,
        "unit": cmd_unit, "ini": cmd_ini, "triggers": cmd_triggers, "dbprobe": cmd_dbprobe}
cmds[sys.argv[1]](sys.argv[2:])
PYEOF

helper() { CHECK_ROOT="$ROOT" "$PY" -c "$PYHELPER" "$@"; }
setting() { helper settings "$1" 2>/dev/null; }
unit_get() { helper unit "$ROOT$UNIT_DIR/$1" "$2" "$3" 2>/dev/null; }

# --- bookkeeping -----------------------------------------------------------------------------
PROBLEMS=()
NOTES=()
problem() { PROBLEMS+=("$*"); }
note() { NOTES+=("$*"); }
FAILED=0
PASSED=0
TITLES=("" "Vespene is the console's version" "settings.d is complete" "the build root is configured and exists"
	"the sudo user can write to the build root" "the worker starts at boot" "the database is reachable"
	"logs go to /var/log/vespene and to the aggregator" "build roots outlive the instance"
	"the web interface is not started" "build tools are baked in")

report() {
	local n="$1" joined="" s
	if [ ${#PROBLEMS[@]} -eq 0 ]; then
		for s in "${NOTES[@]}"; do joined="${joined:+$joined; }$s"; done
		printf 'PASS [%s/10] %s: %s\n' "$n" "${TITLES[$n]}" "${joined:-ok}"
		PASSED=$((PASSED + 1))
	else
		for s in "${PROBLEMS[@]}"; do joined="${joined:+$joined; }$s"; done
		printf 'FAIL [%s/10] %s: %s\n' "$n" "${TITLES[$n]}" "$joined"
		FAILED=$((FAILED + 1))
	fi
	PROBLEMS=()
	NOTES=()
}

live() { [ -z "$ROOT" ]; }

need_expect() { # KEY: records a problem (in this shell, so never call it in $(...)) when unknown
	if ! have_expect "$1" || [ -z "$(expect "$1")" ]; then
		problem "no expected $1 (set it in the environment or in $MANIFEST)"
		return 1
	fi
}

unit_enabled() { # UNIT -> 0 if a WantedBy target links it
	local unit="$1" target ok=1
	[ -f "$ROOT$UNIT_DIR/$unit" ] || return 1
	for target in $(unit_get "$unit" Install WantedBy); do
		[ -e "$ROOT$UNIT_DIR/$target.wants/$unit" ] || [ -L "$ROOT$UNIT_DIR/$target.wants/$unit" ] && ok=0
	done
	return $ok
}

on_path() { # TOOL -> 0 if an executable TOOL is on the worker's PATH in ROOT
	local d
	for d in ${WORKER_PATH//:/ }; do
		if [ -f "$ROOT$d/$1" ] && [ -x "$ROOT$d/$1" ]; then return 0; fi
	done
	return 1
}

expected_worker_cmd() {
	printf '/usr/bin/ssh-agent %s manage.py worker %s --max-builds=%s --max-wait-minutes=%s' \
		"$PYTHON" "$(expect VESPENE_POOL)" "$(expect VESPENE_MAX_BUILDS)" "$(expect VESPENE_MAX_WAIT_MINUTES)"
}

# --- point 1 --------------------------------------------------------------------------------
check_1() {
	local want head want_commit git=(git -c safe.directory='*' -C "$ROOT$VESPENE_DIR")
	need_expect VESPENE_VERSION || return
	want="$(expect VESPENE_VERSION)"
	if [ ! -f "$ROOT$VESPENE_DIR/manage.py" ]; then
		problem "$VESPENE_DIR/manage.py is missing: Vespene is not installed"
		return
	fi
	if [ ! -d "$ROOT$VESPENE_DIR/.git" ]; then
		problem "$VESPENE_DIR is not a git checkout: its version cannot be verified"
		return
	fi
	head="$("${git[@]}" rev-parse HEAD 2>/dev/null)" || {
		problem "git cannot read $VESPENE_DIR"
		return
	}
	want_commit="$("${git[@]}" rev-parse --quiet --verify "$want^{commit}" 2>/dev/null)" || want_commit=""
	if [ -z "$want_commit" ] && printf '%s' "$want" | grep -Eq '^[0-9a-f]{7,40}$'; then
		want_commit="$want" # a commit that is in no fetched ref: compare by prefix
	fi
	if [ -z "$want_commit" ]; then
		problem "requested version '$want' is not a ref of the checkout in $VESPENE_DIR"
	elif [ "${head#"$want_commit"}" = "$head" ]; then
		problem "$VESPENE_DIR is at ${head:0:12}, but the console's version '$want' is ${want_commit:0:12}"
	fi
	if ! "${git[@]}" diff --quiet HEAD -- 2>/dev/null; then
		problem "tracked files in $VESPENE_DIR differ from ${head:0:12} (local modifications)"
	fi
	if [ ! -x "$ROOT$PYTHON" ]; then
		problem "$PYTHON is missing"
	elif live; then
		if ! (cd "$VESPENE_DIR" && "$PYTHON" -c 'import django, split_settings, psycopg2, jinja2, cryptography') >/dev/null 2>&1; then
			problem "$PYTHON cannot import Vespene's requirements (django, split_settings, psycopg2, jinja2, cryptography)"
		fi
	else
		note "requirements import not checked under --root"
	fi
	note "$VESPENE_DIR at ${head:0:12} = '$want'"
}

# --- point 2 --------------------------------------------------------------------------------
check_2() {
	local out sudo_user
	sudo_user="$(expect VESPENE_SUDO_USER)"
	if ! out="$(helper settings-complete "$sudo_user" 2>&1)"; then
		problem "$out"
		return
	fi
	if [ -n "$out" ]; then
		while IFS= read -r line; do problem "$line"; done <<<"$out"
		return
	fi
	note "database.py, secrets.py (console keys), workers.py; secrets unreadable by builds and found nowhere else"
}

# --- point 3 --------------------------------------------------------------------------------
check_3() {
	local want got
	need_expect VESPENE_BUILD_ROOT || return
	want="$(expect VESPENE_BUILD_ROOT)"
	got="$(setting BUILD_ROOT)" || got=""
	if [ -z "$got" ]; then
		problem "BUILD_ROOT is not set in $SETTINGS_DIR"
	elif [ "${got%/}" != "${want%/}" ]; then
		problem "BUILD_ROOT in $SETTINGS_DIR is '$got', expected '$want'"
	fi
	case "${want%/}/" in
	/tmp/* | /var/tmp/* | /run/*) problem "$want is emptied at boot" ;;
	esac
	if [ ! -d "$ROOT$want" ]; then
		problem "$want does not exist"
	fi
	if ! grep -Eq "^d[[:space:]]+${want%/}/?[[:space:]]" "$ROOT$TMPFILES_CONF" 2>/dev/null; then
		problem "$TMPFILES_CONF does not recreate $want at boot"
	fi
	[ ${#PROBLEMS[@]} -eq 0 ] && note "BUILD_ROOT=$want exists and is recreated at boot"
}

# --- point 4 --------------------------------------------------------------------------------
check_4() {
	local root_dir user why
	need_expect VESPENE_BUILD_ROOT || return
	root_dir="$(expect VESPENE_BUILD_ROOT)"
	need_expect VESPENE_SUDO_USER || return
	user="$(expect VESPENE_SUDO_USER)"
	for who in "$user" "$APP_USER"; do
		if ! why="$(helper can "$who" w "$root_dir")"; then
			problem "$why"
		fi
	done
	if [ ! -f "$ROOT$SUDOERS_FILE" ]; then
		problem "$SUDOERS_FILE is missing: $APP_USER cannot run builds as $user"
	elif ! grep -Eq "^${APP_USER}[[:space:]]+ALL[[:space:]]*=[[:space:]]*\(([^)]*,)?[[:space:]]*${user}[[:space:]]*(,[^)]*)?\)[[:space:]]*NOPASSWD:[[:space:]]*ALL" "$ROOT$SUDOERS_FILE"; then
		problem "$SUDOERS_FILE does not let $APP_USER run commands as $user without a password"
	fi
	if live; then
		# shellcheck disable=SC2016 # expanded by the inner shell
		if ! runuser -u "$user" -- sh -c 'p="$1/.vespene-image-check.$$" && : >"$p" && rm -f "$p"' sh "$root_dir" 2>/dev/null; then
			problem "runuser -u $user could not create a file in $root_dir"
		fi
		if ! runuser -u "$APP_USER" -- sudo -n -u "$user" true 2>/dev/null; then
			problem "$APP_USER cannot run 'sudo -n -u $user' (Vespene's sudo isolation)"
		fi
	else
		note "mode bits checked (no runuser under --root)"
	fi
	[ ${#PROBLEMS[@]} -eq 0 ] && note "$user and $APP_USER can write $root_dir; $APP_USER may sudo to $user"
}

# --- point 5 --------------------------------------------------------------------------------
check_5() {
	local n want exec_start user wd restart got numprocs autorestart action drain
	need_expect VESPENE_WORKERS_PER_INSTANCE || return
	n="$(expect VESPENE_WORKERS_PER_INSTANCE)"
	need_expect VESPENE_POOL || return
	need_expect VESPENE_MAX_BUILDS || return
	need_expect VESPENE_MAX_WAIT_MINUTES || return
	want="$(expected_worker_cmd)"
	if [ ! -f "$ROOT$UNIT_DIR/$WORKER_UNIT" ]; then
		problem "$UNIT_DIR/$WORKER_UNIT is missing"
		return
	fi
	unit_enabled "$WORKER_UNIT" || problem "$WORKER_UNIT is not enabled (no WantedBy link)"
	if live && command -v systemctl >/dev/null 2>&1; then
		[ "$(systemctl is-enabled "$WORKER_UNIT" 2>/dev/null)" = enabled ] || problem "systemctl is-enabled $WORKER_UNIT is not 'enabled'"
	fi
	exec_start="$(unit_get "$WORKER_UNIT" Service ExecStart)"
	user="$(unit_get "$WORKER_UNIT" Service User)"
	wd="$(unit_get "$WORKER_UNIT" Service WorkingDirectory)"
	restart="$(unit_get "$WORKER_UNIT" Service Restart)"
	[ "$user" = "$APP_USER" ] || problem "$WORKER_UNIT runs as '${user:-root}', expected $APP_USER"
	[ "$wd" = "$VESPENE_DIR" ] || problem "$WORKER_UNIT WorkingDirectory is '$wd', expected $VESPENE_DIR"
	case "${restart:-no}" in no) ;; *) problem "$WORKER_UNIT has Restart=$restart: workers must not be restarted" ;; esac
	if have_expect VESPENE_WHEN_WORKERS_EXIT; then
		action="$(unit_get "$WORKER_UNIT" Unit SuccessAction)"
		[ "${action:-none}" = "$(expect VESPENE_WHEN_WORKERS_EXIT)" ] || problem "$WORKER_UNIT SuccessAction is '${action:-none}', expected '$(expect VESPENE_WHEN_WORKERS_EXIT)'"
	fi
	drain="$(expect VESPENE_DRAIN_AGENT)"
	if [ "$drain" != off ]; then
		check_5_agent "$drain" "$n" "$want" "$exec_start"
	elif [ "$n" = 1 ]; then
		[ "$exec_start" = "$want" ] || problem "$WORKER_UNIT starts '$exec_start', expected '$want'"
	else
		[ "$exec_start" = "/usr/bin/supervisord -n -c $SUPERVISOR_CONF" ] || problem "$WORKER_UNIT starts '$exec_start', expected supervisord with $SUPERVISOR_CONF for $n workers"
		if [ ! -f "$ROOT$SUPERVISOR_CONF" ]; then
			problem "$SUPERVISOR_CONF is missing"
		else
			got="$(helper ini "$ROOT$SUPERVISOR_CONF" program:worker command 2>/dev/null)"
			[ "$got" = "$want" ] || problem "supervisor program:worker runs '$got', expected '$want'"
			numprocs="$(helper ini "$ROOT$SUPERVISOR_CONF" program:worker numprocs 2>/dev/null)"
			[ "$numprocs" = "$n" ] || problem "supervisor program:worker has numprocs=${numprocs:-1}, expected $n"
			autorestart="$(helper ini "$ROOT$SUPERVISOR_CONF" program:worker autorestart 2>/dev/null)"
			[ "$autorestart" = false ] || problem "supervisor program:worker has autorestart=${autorestart:-unexpected (default)}, expected false"
			local startsecs listener
			startsecs="$(helper ini "$ROOT$SUPERVISOR_CONF" program:worker startsecs 2>/dev/null)"
			[ "$startsecs" = 0 ] || problem "supervisor program:worker has startsecs=${startsecs:-1}: a worker exiting quickly would be retried"
			listener="$(helper ini "$ROOT$SUPERVISOR_CONF" eventlistener:exit_when_all_exited command 2>/dev/null)"
			case "$listener" in
			*"$LIB_DIR/exit-when-all-exited.py worker"*)
				[ -f "$ROOT$LIB_DIR/exit-when-all-exited.py" ] || problem "$LIB_DIR/exit-when-all-exited.py is missing"
				;;
			*) problem "no eventlistener shuts supervisor down when every worker has exited" ;;
			esac
			case "$(helper ini "$ROOT$SUPERVISOR_CONF" eventlistener:exit_when_all_exited events 2>/dev/null)" in
			*PROCESS_STATE_EXITED*) ;;
			*) problem "the exit listener does not subscribe to PROCESS_STATE_EXITED" ;;
			esac
		fi
	fi
	[ -x "$ROOT/usr/bin/ssh-agent" ] || problem "/usr/bin/ssh-agent is missing (openssh-client)"
	[ -x "$ROOT$PYTHON" ] || problem "$PYTHON is missing"
	# Identity: each instance must register as its own worker row, under its own hostname.
	[ -e "$ROOT/etc/vespene/worker_id" ] && problem "/etc/vespene/worker_id is baked in: every instance would be the same worker"
	local fh why
	fh="$(setting FILESERVING_HOSTNAME)" || {
		[ $? = 4 ] && problem "$SETTINGS_DIR cannot be loaded (see point 2)"
		fh=""
	}
	[ -n "$fh" ] && problem "FILESERVING_HOSTNAME is '$fh': workers would not register their own hostname"
	why="$(helper can "$APP_USER" w /etc/vespene)" || problem "$why (the worker writes /etc/vespene/worker_id)"
	# Standby (GCE stop/suspend, AWS warm pools) brings an instance back from a stop: it must
	# come back as the same worker, so the id the worker wrote must be on the persistent disk.
	if [ -f "$ROOT/etc/fstab" ] && awk '$1 !~ /^#/ && ($2 == "/etc/vespene" || $2 == "/etc") && $3 == "tmpfs" { f = 1 } END { exit !f }' "$ROOT/etc/fstab"; then
		problem "/etc/vespene is on a tmpfs (/etc/fstab): an instance back from standby (stopped) would lose /etc/vespene/worker_id and register as a new worker"
	fi
	if [ -f "$ROOT/etc/systemd/system/etc-vespene.mount" ] && grep -qiE '^[[:space:]]*Type[[:space:]]*=[[:space:]]*tmpfs' "$ROOT/etc/systemd/system/etc-vespene.mount"; then
		problem "/etc/vespene is a tmpfs (etc-vespene.mount): an instance back from standby (stopped) would lose /etc/vespene/worker_id and register as a new worker"
	fi
	if [ "$drain" != off ]; then
		[ ${#PROBLEMS[@]} -eq 0 ] && note "$WORKER_UNIT runs the drain agent (CLOUD=$drain), $n loop(s) of '$want'"
	else
		[ ${#PROBLEMS[@]} -eq 0 ] && note "$WORKER_UNIT enabled, $n x '$want' (no drain agent)"
	fi
}

# The drain agent's configuration as the agent itself resolves it (KEY=value lines), or an error.
agent_config() {
	bash "$ROOT$DRAIN_AGENT_BIN" --config "$ROOT$DRAIN_AGENT_CONF" --check-config 2>&1
}
agent_value() { printf '%s\n' "$2" | sed -n "s/^$1=//p" | head -n1; }

# Point 5 with the drain agent (drain_agent != off): the unit runs the agent, and the agent's
# configuration runs exactly the expected worker command, N loops, on the expected channel.
check_5_agent() {
	local drain="$1" n="$2" want="$3" exec_start="$4" cfg got key exp aws_cli
	[ "$exec_start" = "$DRAIN_AGENT_BIN" ] || problem "$WORKER_UNIT starts '$exec_start', expected the drain agent $DRAIN_AGENT_BIN (drain_agent = $drain)"
	if [ ! -f "$ROOT$DRAIN_AGENT_BIN" ]; then
		problem "$DRAIN_AGENT_BIN is missing"
		return
	fi
	[ -x "$ROOT$DRAIN_AGENT_BIN" ] || problem "$DRAIN_AGENT_BIN is not executable"
	if [ ! -f "$ROOT$DRAIN_AGENT_CONF" ]; then
		problem "$DRAIN_AGENT_CONF is missing: the drain agent has no configuration"
		return
	fi
	if ! cfg="$(agent_config)"; then
		problem "the drain agent rejects $DRAIN_AGENT_CONF: $(printf '%s' "$cfg" | head -n1)"
		return
	fi
	got="$(agent_value CLOUD "$cfg")"
	[ "$got" = "$drain" ] || problem "$DRAIN_AGENT_CONF has CLOUD=$got, expected $drain"
	got="$(agent_value WORKERS "$cfg")"
	[ "$got" = "$n" ] || problem "$DRAIN_AGENT_CONF has WORKERS=$got, expected $n"
	got="$(agent_value WORKER_COMMAND "$cfg")"
	[ "$got" = "$want" ] || problem "the drain agent runs '$got', expected '$want'"
	for key in POLL_SECONDS:VESPENE_DRAIN_POLL_SECONDS HEARTBEAT_SECONDS:VESPENE_DRAIN_HEARTBEAT_SECONDS HOOK_NAME:VESPENE_DRAIN_HOOK_NAME; do
		have_expect "${key#*:}" || continue
		exp="$(expect "${key#*:}")"
		got="$(agent_value "${key%%:*}" "$cfg")"
		[ "$got" = "$exp" ] || problem "$DRAIN_AGENT_CONF has ${key%%:*}=$got, expected $exp"
	done
	if [ "$drain" = aws ] || [ "$drain" = gce ]; then
		on_path curl || problem "curl is not on PATH: the drain agent cannot read the metadata server"
	fi
	if [ "$drain" = aws ]; then
		aws_cli="$(agent_value AWS_CLI "$cfg")"
		case "$aws_cli" in
		/*) [ -x "$ROOT$aws_cli" ] || problem "the aws CLI $aws_cli is not installed (awscli): the drain agent cannot acknowledge the lifecycle hook" ;;
		*) on_path "$aws_cli" || problem "the aws CLI '$aws_cli' is not on PATH (awscli): the drain agent cannot acknowledge the lifecycle hook" ;;
		esac
	fi
}

# --- point 6 --------------------------------------------------------------------------------
check_6() {
	local exec_start requires after out
	if [ ! -f "$ROOT$UNIT_DIR/$DBCHECK_UNIT" ]; then
		problem "$UNIT_DIR/$DBCHECK_UNIT is missing: nothing checks the database at boot"
	else
		unit_enabled "$DBCHECK_UNIT" || problem "$DBCHECK_UNIT is not enabled"
		exec_start="$(unit_get "$DBCHECK_UNIT" Service ExecStart)"
		case "$exec_start" in
		"$CHECK_BIN --point 6 --live-db"*) ;;
		*) problem "$DBCHECK_UNIT runs '$exec_start', expected '$CHECK_BIN --point 6 --live-db ...'" ;;
		esac
		if have_expect VESPENE_ON_DB_UNREACHABLE; then
			local fa
			fa="$(unit_get "$DBCHECK_UNIT" Unit FailureAction)"
			[ "${fa:-none}" = "$(expect VESPENE_ON_DB_UNREACHABLE)" ] || problem "$DBCHECK_UNIT FailureAction is '${fa:-none}', expected '$(expect VESPENE_ON_DB_UNREACHABLE)'"
		fi
	fi
	if [ -f "$ROOT$UNIT_DIR/$WORKER_UNIT" ]; then
		requires="$(unit_get "$WORKER_UNIT" Unit Requires)"
		after="$(unit_get "$WORKER_UNIT" Unit After)"
		case " $requires " in *" $DBCHECK_UNIT "*) ;; *) problem "$WORKER_UNIT does not Require $DBCHECK_UNIT" ;; esac
		case " $after " in *" $DBCHECK_UNIT "*) ;; *) problem "$WORKER_UNIT is not ordered After $DBCHECK_UNIT" ;; esac
	fi
	[ -x "$ROOT$CHECK_BIN" ] || problem "$CHECK_BIN is missing"
	on_path psql || problem "psql (postgresql-client) is not on PATH: the boot check cannot connect"
	if [ "$LIVE_DB" = 1 ]; then
		local pool
		need_expect VESPENE_POOL || return
	pool="$(expect VESPENE_POOL)"
		if out="$(helper dbprobe "$pool" "$WAIT" 2>&1)"; then
			note "$out"
		else
			problem "$out"
		fi
	else
		[ ${#PROBLEMS[@]} -eq 0 ] && note "$DBCHECK_UNIT runs before the worker (connection not tried: no --live-db)"
	fi
}

# --- point 7 --------------------------------------------------------------------------------
check_7() {
	local target out n why
	need_expect VESPENE_LOG_TARGET || return
	target="$(expect VESPENE_LOG_TARGET)"
	n="$(expect VESPENE_WORKERS_PER_INSTANCE)"
	if [ ! -d "$ROOT$LOG_DIR" ]; then
		problem "$LOG_DIR does not exist"
	else
		why="$(helper can "$APP_USER" w "$LOG_DIR")" || problem "$why"
	fi
	local drain cfg
	drain="$(expect VESPENE_DRAIN_AGENT)"
	if [ "$drain" != off ]; then
		# The agent's own lines go to the journal and to $LOG_DIR/drain-agent.log, each worker's
		# output to $LOG_DIR/worker_NN.log (an unusable configuration is point 5's failure).
		if [ -f "$ROOT$DRAIN_AGENT_BIN" ] && [ -f "$ROOT$DRAIN_AGENT_CONF" ] && cfg="$(agent_config)"; then
			out="$(agent_value LOG_DIR "$cfg")"
			[ "${out%/}" = "$LOG_DIR" ] || problem "the drain agent writes worker logs to '${out:-nowhere}', not $LOG_DIR"
		fi
	elif [ -f "$ROOT$UNIT_DIR/$WORKER_UNIT" ]; then
		if [ "$n" = 1 ]; then
			out="$(unit_get "$WORKER_UNIT" Service StandardOutput)"
			case "$out" in
			append:"$LOG_DIR"/* | file:"$LOG_DIR"/*) ;;
			*) problem "$WORKER_UNIT StandardOutput is '${out:-journal}', not a file in $LOG_DIR" ;;
			esac
			case "$(unit_get "$WORKER_UNIT" Service StandardError)" in
			'' | inherit) ;;
			*) problem "$WORKER_UNIT StandardError does not follow StandardOutput into $LOG_DIR" ;;
			esac
		elif [ -f "$ROOT$SUPERVISOR_CONF" ]; then
			out="$(helper ini "$ROOT$SUPERVISOR_CONF" program:worker stdout_logfile 2>/dev/null)"
			case "$out" in "$LOG_DIR"/*) ;; *) problem "supervisor program:worker logs to '${out:-AUTO}', not $LOG_DIR" ;; esac
			[ "$(helper ini "$ROOT$SUPERVISOR_CONF" program:worker redirect_stderr 2>/dev/null)" = true ] || problem "supervisor program:worker does not redirect stderr into its log"
			out="$(helper ini "$ROOT$SUPERVISOR_CONF" supervisord logfile 2>/dev/null)"
			case "$out" in "$LOG_DIR"/*) ;; *) problem "supervisord logs to '${out:-default}', not $LOG_DIR" ;; esac
		fi
	fi
	if [ -f "$ROOT$UNIT_DIR/$DBCHECK_UNIT" ]; then
		case "$(unit_get "$DBCHECK_UNIT" Service StandardOutput)" in
		append:"$LOG_DIR"/*) ;;
		*) problem "$DBCHECK_UNIT does not log to $LOG_DIR" ;;
		esac
	fi
	local proto hostport host port
	proto="${target%%://*}"
	hostport="${target#*://}"
	host="${hostport%:*}"
	port="${hostport##*:}"
	if [ ! -f "$ROOT$RSYSLOG_CONF" ]; then
		problem "$RSYSLOG_CONF is missing: $LOG_DIR is not shipped to $target"
	else
		grep -Fq "File=\"$LOG_DIR/*.log\"" "$ROOT$RSYSLOG_CONF" || problem "$RSYSLOG_CONF does not read $LOG_DIR/*.log"
		if ! grep -q 'type="omfwd"' "$ROOT$RSYSLOG_CONF" ||
			! grep -Fq "Target=\"$host\"" "$ROOT$RSYSLOG_CONF" ||
			! grep -Fq "Port=\"$port\"" "$ROOT$RSYSLOG_CONF" ||
			! grep -Fq "Protocol=\"$proto\"" "$ROOT$RSYSLOG_CONF"; then
			problem "$RSYSLOG_CONF does not forward to $target"
		fi
	fi
	if live; then
		if command -v rsyslogd >/dev/null 2>&1; then
			rsyslogd -N1 >/dev/null 2>&1 || problem "rsyslogd -N1 rejects the rsyslog configuration"
			[ "$(systemctl is-enabled rsyslog.service 2>/dev/null)" = enabled ] || problem "rsyslog.service is not enabled"
		else
			problem "rsyslogd is not installed"
		fi
	else
		note "rsyslogd -N1 not run under --root"
	fi
	[ ${#PROBLEMS[@]} -eq 0 ] && note "$LOG_DIR/*.log -> $target"
}

# --- point 8 --------------------------------------------------------------------------------
check_8() {
	local publish_b64 mount_src root_dir cmds want c first ok
	publish_b64="$(expect VESPENE_PUBLISH_COMMAND_B64)"
	mount_src="$(expect VESPENE_BUILDROOT_MOUNT_SOURCE)"
	need_expect VESPENE_BUILD_ROOT || return
	root_dir="$(expect VESPENE_BUILD_ROOT)"
	if [ -n "$publish_b64" ]; then
		want="$(printf '%s' "$publish_b64" | base64 -d 2>/dev/null)"
		if ! cmds="$(helper triggers 2>&1)"; then
			problem "$cmds"
			return
		fi
		ok=0
		while IFS= read -r c; do
			c="$(printf '%s' "$c" | base64 -d)"
			[ "$c" = "$want" ] && ok=1
		done <<<"$cmds"
		if [ "$ok" = 0 ]; then
			problem "the command trigger is not the requested buildroot_publish_command"
			return
		fi
		first="${want%% *}"
		case "$first" in
		*'{'* | *'$'* | *'('*) ;;
		/*) [ -x "$ROOT$first" ] || problem "the publish command's program $first is not installed" ;;
		*) on_path "$first" || problem "the publish command's program '$first' is not on PATH" ;;
		esac
		[ ${#PROBLEMS[@]} -eq 0 ] && note "success and failure triggers run '$want'"
	elif [ -n "$mount_src" ]; then
		if awk -v src="$mount_src" -v mp="${root_dir%/}" '$1 == src && ($2 == mp || $2 == mp "/") { found = 1 } END { exit !found }' "$ROOT/etc/fstab" 2>/dev/null; then
			note "$mount_src is mounted at $root_dir (/etc/fstab)"
		else
			problem "/etc/fstab does not mount $mount_src at $root_dir"
		fi
		if live && ! mountpoint -q "$root_dir" 2>/dev/null; then
			note "$root_dir is not mounted right now"
		fi
	else
		problem "neither a publish trigger (buildroot_publish_command) nor a shared build root (buildroot_mount_source) is expected"
	fi
}

# --- point 9 --------------------------------------------------------------------------------
check_9() {
	local f target unit fe
	if [ -e "$ROOT$UNIT_DIR/vespene.service" ] || [ -L "$ROOT$UNIT_DIR/vespene.service" ]; then
		target="$(readlink "$ROOT$UNIT_DIR/vespene.service" || true)"
		[ "$target" = /dev/null ] || problem "vespene.service (web interface and workers) is not masked"
	fi
	for f in "$ROOT$UNIT_DIR"/*.wants/* "$ROOT/lib/systemd/system"/*.wants/*; do
		[ -e "$f" ] || [ -L "$f" ] || continue
		unit="$(basename "$f")"
		target="$(readlink "$f" || true)"
		case "$target" in
		/*) target="$ROOT$target" ;;
		'') target="$f" ;;
		*) target="$(dirname "$f")/$target" ;;
		esac
		[ -f "$target" ] || continue
		if grep -Eq '^[[:space:]]*ExecStart[[:space:]]*=.*(gunicorn|runserver|vespene\.wsgi)' "$target"; then
			problem "enabled unit $unit starts the web interface"
		fi
		if grep -Eq '^[[:space:]]*ExecStart[[:space:]]*=.*supervisord' "$target"; then
			local conf
			conf="$(grep -Eo -- '-c[[:space:]]+[^[:space:]]+' "$target" | head -n1 | awk '{print $2}')"
			[ -n "$conf" ] || conf=/etc/supervisor/supervisord.conf
			if [ -f "$ROOT$conf" ] && grep -Eq '^[[:space:]]*command[[:space:]]*=.*(gunicorn|runserver|vespene\.wsgi)' "$ROOT$conf"; then
				problem "enabled unit $unit runs supervisor config $conf, which starts the web interface"
			fi
		fi
	done
	for f in "$ROOT"/etc/vespene/*.conf "$ROOT"/etc/supervisor/conf.d/*.conf; do
		[ -f "$f" ] || continue
		if grep -Eq '^[[:space:]]*command[[:space:]]*=.*(gunicorn|runserver|vespene\.wsgi)' "$f"; then
			problem "${f#"$ROOT"} defines a web interface program"
		fi
	done
	fe="$(setting FILESERVING_ENABLED)" || fe="(unset: Vespene's default True)"
	[ "$fe" = False ] || problem "FILESERVING_ENABLED is $fe: the console would link build roots to this instance's file server"
	if live && command -v ss >/dev/null 2>&1; then
		if [ -n "$(ss -Hltn 'sport = :8000' 2>/dev/null)" ]; then
			problem "something listens on port 8000 (Vespene's web port)"
		fi
	fi
	[ ${#PROBLEMS[@]} -eq 0 ] && note "vespene.service masked, no gunicorn, FILESERVING_ENABLED = False"
}

# --- point 10 -------------------------------------------------------------------------------
check_10() {
	local t p tools pkgs missing=()
	tools="$(expect VESPENE_BUILD_TOOLS)"
	pkgs="$(expect VESPENE_EXTRA_PACKAGES)"
	for t in git ssh-agent sudo $tools; do
		on_path "$t" || missing+=("$t")
	done
	[ ${#missing[@]} -eq 0 ] || problem "not on PATH ($WORKER_PATH): ${missing[*]}"
	if live && [ -n "$pkgs" ] && command -v dpkg-query >/dev/null 2>&1; then
		for p in $pkgs; do
			p="${p%%=*}"
			[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || problem "package $p is not installed"
		done
	fi
	[ ${#PROBLEMS[@]} -eq 0 ] && note "on PATH: git ssh-agent sudo${tools:+ $tools}${pkgs:+; packages: $pkgs}"
}

for n in "${POINTS[@]}"; do
	"check_$n"
	report "$n"
done
printf '%d passed, %d failed%s\n' "$PASSED" "$FAILED" "${ROOT:+ (root $ROOT)}"
[ "$FAILED" -eq 0 ]
