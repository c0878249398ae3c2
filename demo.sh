#!/usr/bin/env bash
# README command (a): install xchange in .venv and run the demo exchange once on the shipped
# samples (local folders, a SQLite journal, no server). Run it again: nothing is sent twice.
set -euo pipefail
cd "$(dirname "$0")"
. tools/venv.sh
python="$(venv_python)"
# pip's own progress where a person waits (a terminal); a line otherwise.
echo "installing xchange and its libraries into .venv (pip; a minute or two the first time)" >&2
if [ -t 2 ]; then quiet=(); else quiet=(--quiet); fi
"$python" -m pip install "${quiet[@]}" --disable-pip-version-check . >&2
mkdir -p var/demo/inbox
# (the stock count feeds three routes: its three sample folders hold the same file)
for sample in samples/*/in/*; do cp "$sample" var/demo/inbox/; done
exec "$python" -m xchange run --once --config config/demo.toml
