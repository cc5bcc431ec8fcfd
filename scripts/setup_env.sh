#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install
# neurodyn with everything the demo and the tests need. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${NEURODYN_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.neurodyn-installed"
if [ ! -f "$stamp" ] || [ "$root/requirements.txt" -nt "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt"
    # nlb-tools pins old versions of its dependencies; it needs none beyond ours at import.
    "$venv/bin/python" -m pip install --quiet --no-deps "nlb-tools>=0.0.4"
    "$venv/bin/python" -m pip install --quiet --no-deps -e "$root"
    touch "$stamp"
fi
echo "$venv"
