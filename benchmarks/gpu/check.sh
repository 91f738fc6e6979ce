#!/usr/bin/env bash
# `make gpu-check`: build what a bare GPU machine needs (wheels of the locked packages its image lacks, into the
# ignored folder .gpu-wheels/), check that it travels (the device tool carries at most 64 MiB: the working tree plus
# the carried folder), and print the one command to run there. Extra arguments go to benchmarks/gpu/bundle.py
# (--with-hf-stack: also the locked transformers stack, ~20 MiB more).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
"$PYTHON" benchmarks/gpu/bundle.py "$@"
bundle=$(du -sb .gpu-wheels | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
total=$(( (bundle + tree) / 1048576 ))
echo "travels: $(( tree / 1048576 )) MiB of working tree + $(( bundle / 1048576 )) MiB of wheels = ${total} MiB (limit 64)"
if (( total >= 64 )); then
  echo "error: over the device tool's 64 MiB; drop --with-hf-stack or untracked files" >&2
  exit 1
fi
cat <<'TXT'

On the GPU machine, one call (the device tool's `run`, carry [".gpu-wheels"], timeout_s 540):

    bash benchmarks/gpu/run.sh

It installs the wheels (--no-deps --no-index) and the project (pip install -e . --no-deps), then runs, all under
`timeout 480`: the suite with pytest -n 4 (CUDA tests included; logs in $OUT/pytest.log) and benchmarks/gpu/gpu.py
(tables in $OUT/benchmark.log, figures in $OUT/gpu.json). Put the tables in docs/benchmarks.md and docs/speed.md.
TXT
