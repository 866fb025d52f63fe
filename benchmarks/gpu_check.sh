#!/usr/bin/env bash
# One command to verify the engine's GPU paths on a CUDA machine (see benchmarks/gpu_check.py):
#   bash benchmarks/gpu_check.sh                  # all steps, full sizes (~10-20 min on one H100)
#   bash benchmarks/gpu_check.sh --steps embed,knn --knn-n 1000000
#   bash benchmarks/gpu_check.sh --smoke          # toy sizes on CPU: checks the script itself
# Results: benchmarks/results/gpu_check.json and .md (or $OUT/ when set, e.g. on a lent device).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
python -c "import engine" 2>/dev/null || pip install -q -e . --no-deps
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
exec python benchmarks/gpu_check.py "$@"
