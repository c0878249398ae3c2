#!/usr/bin/env bash
# Install what the tests need on a fresh machine, then run the whole suite.
#   - OpenSSH's sshd (the SFTP tests start a real one on 127.0.0.1), via apt-get if missing
#   - xchange itself with its test extras
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
    if [ "$(id -u)" -eq 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
    export DEBIAN_FRONTEND=noninteractive
    $apt_get update -qq
    $apt_get install -y -qq openssh-server openssh-client >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m ruff check xchange tests
exec python3 -m pytest "$@"
