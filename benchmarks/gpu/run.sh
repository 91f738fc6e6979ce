#!/usr/bin/env bash
# On the GPU machine (see benchmarks/gpu/check.sh): install the carried wheels and the project, then the test suite on
# the GPU and benchmarks/gpu/gpu.py, the whole within `timeout 480`; what they print lands in $OUT (the device tool's
# folder that comes back), or ./gpu-check-out elsewhere. TESTS_S and BENCH_S split the time (default 270 + 170 s).
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-$PWD/gpu-check-out} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec timeout 480 bash -c '
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile .gpu-wheels/*.whl || exit 3
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 3
python3 -m pip check > "$OUT/pip-check.txt" 2>&1
{ nvidia-smi; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"; } > "$OUT/machine.txt" 2>&1
timeout "${TESTS_S:-270}" python3 -m pytest -n 4 -q -p no:cacheprovider --timeout 240 2>&1 | tee "$OUT/pytest.log" | tail -60
echo "pytest exit: $?"
timeout "${BENCH_S:-170}" python3 benchmarks/gpu/gpu.py --out "$OUT/gpu.json" 2>&1 | tee "$OUT/benchmark.log" | tail -30
echo "benchmark exit: $?"
'
