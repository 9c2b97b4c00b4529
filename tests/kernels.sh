#!/usr/bin/env bash
# Runs the tests that touch embeddings, clustering, strategies, training and dedup under
# every OpenBLAS kernel this CPU can run, torch's plain and AVX2 CPU paths, and one
# thread, so that a result that holds only on one machine's rounding shows up here.
# Usage: tests/kernels.sh [pytest args]; `make test-kernels` runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=${PYTEST:-.venv/bin/pytest}
TESTS=(tests/test_strategies.py tests/test_push.py tests/test_features.py
  tests/test_labeling.py tests/test_label_report.py tests/test_quality.py
  tests/test_trainer.py tests/test_training.py tests/test_data.py tests/test_evaluate.py
  tests/test_datasets.py tests/test_tracking.py tests/test_dedup.py tests/test_drift.py)

cores=(Prescott Nehalem Sandybridge Haswell)
grep -q avx512f /proc/cpuinfo && cores+=(SkylakeX)
runs=()
for c in "${cores[@]}"; do runs+=("OPENBLAS_CORETYPE=$c"); done
runs+=("ATEN_CPU_CAPABILITY=default" "ATEN_CPU_CAPABILITY=avx2" "OMP_NUM_THREADS=1")

failed=0
for run in "${runs[@]}"; do
  echo "=== $run"
  # the machine's own OpenBLAS settings would override the kernel under test
  if ! env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$run" "$PYTEST" -q -p no:cacheprovider \
    "${TESTS[@]}" "$@" 2>&1 | tail -n 5; then failed=1; fi
done
exit $failed
