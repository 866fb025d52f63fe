#!/usr/bin/env bash
# Does the engine still pass its fast tests with the NEWEST releases that pyproject.toml's bounds allow?
# constraints.txt pins what CI and the README install; this script ignores it on purpose, in a scratch venv,
# so an upstream release that will break the next refresh of the lock shows up before it reaches anyone.
#   bash tools/check_latest.sh            # scratch venv in $TMPDIR, fast tests (no slow/server/gpu marks)
#   KEEP=1 bash tools/check_latest.sh     # keep the venv and print its pip freeze (a candidate new lock)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
pip install -q torch==2.13.0                  # the CPU build; see README
pip install -q --upgrade -e ".[test]"         # no -c constraints.txt: newest allowed versions
echo "== newest allowed versions =="
pip freeze --exclude-editable | grep -iE '^(transformers|flagembedding|sentence-transformers|pymilvus|milvus|numba|fast.hdbscan|umap-learn|evoc|scikit-learn|numpy|pandas)=' || true
status=0
python -m pytest -q -x -m "not slow and not server and not gpu" || status=$?
if [ "${KEEP:-0}" = 1 ]; then
  echo "venv kept at $venv; candidate lock:"; pip freeze --exclude-editable
else
  rm -rf "$(dirname "$venv")"
fi
exit $status
