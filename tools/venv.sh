# Sourced by demo.sh and tests/run-all.sh: a virtual environment in .venv (Debian's system
# Python is "externally managed": pip installs go into a venv), made with python3 -m venv,
# installing Debian's python3-venv first when the interpreter lacks it.
venv_python() {
    local venv="${XCHANGE_VENV:-.venv}"
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            if command -v apt-get >/dev/null 2>&1; then
                if [ "$(id -u)" -eq 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
                echo "installing python3-venv (apt-get) to make $venv" >&2
                DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq python3-venv >/dev/null \
                    || { DEBIAN_FRONTEND=noninteractive $apt_get update -qq \
                         && DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq python3-venv >/dev/null; }
            fi
            python3 -m venv "$venv"
        fi
    fi
    echo "$venv/bin/python"
}
