#!/usr/bin/env bash
# The main job on a fresh machine: install, then run the demo on built-in synthetic data.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh" | tail -n 1)"
exec "$venv/bin/neurodyn" demo --out "${1:-$root/demo_results}"
