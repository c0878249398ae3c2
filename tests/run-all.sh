#!/usr/bin/env bash
# Install what the tests need on a fresh machine, then run the whole suite.
#   - the servers the tests start on 127.0.0.1 (Debian packages, via apt-get when
#     missing): OpenSSH's sshd, gesftpserver, rclone (serve sftp), ProFTPD with mod_sftp,
#     PostgreSQL
#   - xchange itself with its test extras, in a virtual environment (.venv)
#   - ruff and mypy on the code, then pytest
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
{ command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; } || missing+=(openssh-server)
command -v sftp >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/libexec/gesftpserver ] || missing+=(gesftpserver)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
[ -x /usr/sbin/proftpd ] || missing+=(proftpd-core)
[ -e /usr/lib/proftpd/mod_sftp.so ] || missing+=(proftpd-mod-crypto)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # checks the unit file
# PostgreSQL for the shared journal's tests (started by the tests: initdb in a temporary
# folder, as the unprivileged postgres user, on a free port of 127.0.0.1).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# GnuPG for the PGP routes' tests (keys made by the tests; each party's agent stopped after).
command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
# A real headless browser for the status page's test.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Info-ZIP's unzip: another implementation reads the zips xchange writes.
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
# A CJK font, so that the browser draws Chinese names on the status page, not tofu.
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || missing+=(fonts-wqy-zenhei)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
    export DEBIAN_FRONTEND=noninteractive
    echo "installing ${missing[*]} (apt-get)" >&2
    $apt_get update -qq
    $apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# xchange and its test extras in a virtual environment (.venv; XCHANGE_VENV names another).
. tools/venv.sh
python="$(venv_python)"
"$python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
"$python" -m ruff check xchange tests
"$python" -m mypy xchange
# The tests mostly wait (servers, networks, daemons): as many at once as there are cores.
exec "$python" -m pytest -n auto --dist loadgroup "$@"
