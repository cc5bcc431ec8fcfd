#!/usr/bin/env bash
# Run the test suite on a fresh machine: install, then pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh" | tail -n 1)"
cd "$root"
exec "$venv/bin/python" -m pytest -q "$@"
