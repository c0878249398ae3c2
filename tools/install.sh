#!/usr/bin/env bash
# Install xchange as a service on a Debian-like host (run as root):
#
#   sudo bash tools/install.sh            # the defaults below
#   sudo systemctl enable --now xchange   # once /etc/xchange/xchange.toml is written
#
# What it does (each step is skipped when already done, so it can run again to upgrade):
#   - a system user and group (xchange) with no shell and no login;
#   - a virtual environment with xchange in it (PREFIX/venv; Debian's Python is externally
#     managed), made from a Python the service user can run (the system's /usr/bin/python3
#     first: a python3 under root's home, a pyenv say, is refused by name), and
#     /usr/local/bin/xchange pointing at it for people at a shell;
#   - the shipped layouts and mappings in PREFIX/formats (replaced on upgrade; write your
#     own in a folder of yours);
#   - ETC (0750 root:xchange): secrets.env (0640 root:xchange: KEY=value lines xchange
#     reads itself; never in the configuration), known_hosts (0644: host keys are
#     public), xchange.toml.example (with this install's paths);
#   - STATE (0750 xchange:xchange) for the journal and quarantine (xchange keeps their
#     files 0600), LOGS for cron's log;
#   - the systemd unit (ExecStart in the venv, User=xchange), checked with systemd-analyze
#     verify when it is there, and a crontab for nightly runs;
#   - then it checks, as the service user, that xchange runs (xchange --version).
#
# Options (for a staged install, a package build or a test): --prefix DIR, --etc DIR,
# --state DIR, --logs DIR, --unit-dir DIR, --bin-dir DIR, --user NAME (an existing user,
# or one to create), --venv DIR (an existing venv with xchange installed), --python PATH
# (the interpreter to make the venv with), --no-systemctl.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/opt/xchange
etc=/etc/xchange
state=/var/lib/xchange
logs=/var/log/xchange
unit_dir=/etc/systemd/system
bin_dir=/usr/local/bin
user=xchange
venv=""
python=""
systemctl=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --etc) etc="$2"; shift 2 ;;
        --state) state="$2"; shift 2 ;;
        --logs) logs="$2"; shift 2 ;;
        --unit-dir) unit_dir="$2"; shift 2 ;;
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --user) user="$2"; shift 2 ;;
        --venv) venv="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --no-systemctl) systemctl=no; shift ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
venv="${venv:-$prefix/venv}"
say() { echo "install.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "run it as root (it creates a user, folders owned by it, and a systemd unit)"
    exit 2
fi

# The user and group the service runs as.
if ! id -u "$user" >/dev/null 2>&1; then
    say "creating the system user $user"
    useradd --system --user-group --home-dir "$state" --no-create-home \
        --shell /usr/sbin/nologin "$user"
fi
group="$(id -gn "$user")"

# Whether the service user can run an interpreter (a python3 under root's home cannot be).
runs_as_user() {
    runuser -u "$user" -- "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        >/dev/null 2>&1
}

# xchange in a virtual environment, made from a Python the service user can run.
if [ ! -x "$venv/bin/xchange" ]; then
    if [ -z "$python" ]; then
        for candidate in /usr/bin/python3 "$(command -v python3 || true)"; do
            if [ -n "$candidate" ] && runs_as_user "$candidate"; then
                python="$candidate"
                break
            fi
        done
    fi
    if [ -z "$python" ] || ! runs_as_user "$python"; then
        say "no Python 3.11 or newer that the user $user can run (tried ${python:-/usr/bin/python3 and $(command -v python3 || echo python3)}):"
        say "install Debian's python3 (apt-get install python3 python3-venv), or name one with --python"
        exit 2
    fi
    say "installing xchange into $venv (with $python; pip's progress below)"
    mkdir -p "$(dirname "$venv")"
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        say "installing python3-venv (apt-get) to make $venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
            || { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --disable-pip-version-check . >&2
    [ -x "$venv/bin/xchange" ] || { say "pip did not install xchange into $venv"; exit 2; }
fi
mkdir -p "$bin_dir"
ln -sfn "$venv/bin/xchange" "$bin_dir/xchange"

# The shipped layouts and mappings, readable by everyone, replaced on upgrade.
install -d -m 0755 "$prefix"
rm -rf "$prefix/formats.new"
cp -R formats "$prefix/formats.new"
chmod -R u=rwX,go=rX "$prefix/formats.new"
rm -rf "$prefix/formats"
mv "$prefix/formats.new" "$prefix/formats"

# Folders and files, with the owners and modes the service needs.
install -d -m 0750 -o root -g "$group" "$etc"
install -d -m 0750 -o "$user" -g "$group" "$state"
install -d -m 0750 -o "$user" -g "$group" "$logs"
if [ ! -e "$etc/secrets.env" ]; then
    install -m 0640 -o root -g "$group" /dev/null "$etc/secrets.env"
    cat >"$etc/secrets.env" <<'EOF'
# Secrets for xchange, one KEY=value per line (quote a value with spaces). xchange reads
# this file itself (secrets = "/etc/xchange/secrets.env" in xchange.toml), the same way for
# the daemon, cron and a shell: a $ or & in a value is kept as written.
# XCHANGE_WMS_PASSWORD=...
# XCHANGE_WECOM_URL=https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...
EOF
fi
chown root:"$group" "$etc/secrets.env"
chmod 0640 "$etc/secrets.env"
if [ ! -e "$etc/known_hosts" ]; then
    install -m 0644 -o root -g root /dev/null "$etc/known_hosts"
fi

# Fill a shipped template with this install's paths and user.
render() {
    sed -e "s#/opt/xchange/venv#$venv#g" \
        -e "s#/etc/xchange#$etc#g" \
        -e "s#/var/lib/xchange#$state#g" \
        -e "s#/var/log/xchange#$logs#g" \
        -e "s#^User=xchange#User=$user#" \
        -e "s#^Group=xchange#Group=$group#" \
        "$1"
}

mkdir -p "$unit_dir"
render config/xchange.service >"$unit_dir/xchange.service"
chmod 0644 "$unit_dir/xchange.service"
render config/crontab.example >"$etc/crontab.example"
chmod 0644 "$etc/crontab.example"
# The example configuration, with this install's paths and the shipped formats.
render config/sftp-example.toml \
    | sed -e "s#^formats = \"../formats\"#formats = \"$prefix/formats\"#" \
        -e "s#--config config/sftp-example.toml#--config $etc/xchange.toml#" \
    >"$etc/xchange.toml.example"
chown root:"$group" "$etc/xchange.toml.example"
chmod 0644 "$etc/xchange.toml.example"
if command -v systemd-analyze >/dev/null 2>&1; then
    systemd-analyze verify "$unit_dir/xchange.service"
fi
if [ "$systemctl" = yes ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

# An installation from before xchange read its secrets file itself: the unit and crontab no
# longer load it, so a configuration without `secrets =` would lose every secret. Stop, and
# say the one line to add.
if [ -f "$etc/xchange.toml" ] && grep -qE '^[A-Za-z_][A-Za-z0-9_]*=' "$etc/secrets.env" \
    && ! grep -qE '^secrets[[:space:]]*=' "$etc/xchange.toml"; then
    say "$etc/xchange.toml names no secrets file, and $etc/secrets.env holds secrets:"
    say "the service reads it no more by itself; add this line at the top of $etc/xchange.toml:"
    say "  secrets = \"$etc/secrets.env\""
    say "then run install.sh again"
    exit 2
fi

# What the service will run, run as the service user.
if ! runuser -u "$user" -- "$venv/bin/xchange" --version >/dev/null 2>&1; then
    say "the user $user cannot run $venv/bin/xchange:"
    runuser -u "$user" -- "$venv/bin/xchange" --version >&2 || true
    say "make the venv with a Python $user can run (--python /usr/bin/python3)"
    exit 2
fi

say "done. Next:"
say "  1. write $etc/xchange.toml (start from $etc/xchange.toml.example):"
say "     journal and quarantine under $state, known_hosts = \"$etc/known_hosts\""
say "  2. put the secrets it names in $etc/secrets.env (the example reads it: secrets = \"$etc/secrets.env\")"
say "  3. pin each SFTP server's key: xchange trust ENDPOINT --config $etc/xchange.toml"
say "  4. xchange check --config $etc/xchange.toml, then"
say "     systemctl enable --now xchange   (or: crontab -u $user $etc/crontab.example)"
