#!/usr/bin/env bash
# On a machine with a CUDA GPU and a CUDA build of torch (in the Python that runs this; set PYTHON to
# choose another): the GPU tests, then the population engine's benchmark at the default generation
# (25 epochs) and a profile of one population step. Logs and tables go to the folder given (default:
# gpu_checks/). --with-embedded adds the embedded engine's rows (on one H100: 8 workers took 80-96 s,
# 20 workers 213 s).
#
#   bash scripts/gpu_checks.sh [OUT_DIR] [--with-embedded]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/gpu_checks"
embedded=0
for argument in "$@"; do
    case "$argument" in
        --with-embedded) embedded=1 ;;
        *) out="$argument" ;;
    esac
done
python="${PYTHON:-python3}"
mkdir -p "$out"
cd "$root"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_checks: torch sees no CUDA GPU (python: $python); install a CUDA build of torch first" >&2
    exit 2
fi
"$python" -c "import torch; print('torch', torch.__version__, 'cuDNN', torch.backends.cudnn.version(), \
'GPU', torch.cuda.get_device_name(0))" | tee "$out/machine.txt"
git log --oneline -1 2>/dev/null | tee -a "$out/machine.txt"

status=0
echo "== GPU tests"
"$python" -m pytest -q -p no:cacheprovider -k "gpu or cuda or graph" \
    tests/test_population_model.py tests/test_population_trainer.py tests/test_pbt_population_engine.py \
    tests/test_train_posterior_refinement.py tests/test_cuda_graphs.py 2>&1 | tee "$out/tests.log" | tail -n 3
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== population engine, 25-epoch generation"
"$python" bench/population.py --device cuda --workers 8 20 --epochs 25 --engines population single 2>&1 \
    | tee "$out/bench_population.txt"
echo "== one population step, by variant"
"$python" bench/population_profile.py --device cuda --workers 8 --rows 12 2>&1 | grep -v "^USDT" \
    | tee "$out/profile.txt" | grep "^== "
if [ "$embedded" -eq 1 ]; then
    echo "== embedded engine, 25-epoch generation"
    "$python" bench/population.py --device cuda --workers 8 20 --epochs 25 --engines embedded 2>&1 \
        | tee "$out/bench_embedded.txt"
fi
exit "$status"
