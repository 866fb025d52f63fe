#!/usr/bin/env bash
# The engine's GPU check in ONE call of at most 8 minutes on a lent GPU machine (see benchmarks/gpu_check.py).
#
# Here, once (needs PyPI):   python benchmarks/gpu_prepare.py     # fills .whl/: wheels + headline sample, size check
# On the device, one call:   bash benchmarks/gpu_check.sh          # run tool: carry [".whl"], timeout_s 540
# Here, without a GPU:       bash benchmarks/gpu_check.sh --smoke  # toy sizes on the CPU: checks the script itself
#
# Extra arguments go to gpu_check.py (--budget SECONDS, --steps ...). Results: gpu_check.json/.md/.log in $OUT
# when set (the device), else benchmarks/results/.
set -uo pipefail
export GPU_CHECK_T0="${GPU_CHECK_T0:-$(date +%s.%N)}"  # the budget counts from here, installs included
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
smoke=0
for a in "$@"; do [ "$a" = "--smoke" ] && smoke=1; done
if [ "$smoke" = 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
    # The image's own versions stay; these pinned ones shadow them (FlagEmbedding needs transformers < 5).
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
        .whl/*.whl 2>&1 | grep -v -i "warning" || true
    export PYTHONPATH="/tmp/gpu_check_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TRANSFORMERS_VERBOSITY=error
PY=python3
command -v python3 >/dev/null || PY=python
suffix=""
[ "$smoke" = 1 ] && suffix="_smoke"
$PY benchmarks/gpu_check.py --out-dir "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check${suffix}.log"
exit "${PIPESTATUS[0]}"
