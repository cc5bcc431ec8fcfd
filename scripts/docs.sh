#!/usr/bin/env bash
# Build (default) or serve the documentation site with the project's environment:
#   bash scripts/docs.sh [build|serve]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh" | tail -n 1)"
stamp="$venv/.neurodyn-docs-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet "mkdocs>=1.6" "mkdocs-material>=9.5" "mkdocstrings[python]>=0.26"
    touch "$stamp"
fi
cd "$root"
case "${1:-build}" in
    build) exec "$venv/bin/mkdocs" build --strict ;;
    serve) exec "$venv/bin/mkdocs" serve ;;
    *) echo "usage: bash scripts/docs.sh [build|serve]" >&2; exit 2 ;;
esac
