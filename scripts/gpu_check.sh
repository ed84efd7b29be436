#!/usr/bin/env bash
# The day a GPU is lent, one command: the test suite with `cuda` joining `cpu` in the device-parametrised tests
# (tests/conftest.py's `device` fixture), then the benchmark's GPU steps (scripts/benchmark.py: fused-attention kernels,
# ours vs torchvision, MViTv2-S/-B throughput fp32/bf16 eager/checkpointing/compiled, peak memory). It writes to OUT_DIR:
# benchmarks_gpu.md (the table for docs/benchmarks.md), pytest_fast.log, pytest_slow_cuda.log, benchmark.log.
#
#   make gpu-check                                  # this checkout's .venv (made by make install)
#   make gpu-check PY=python3 GPU_CHECK_OUT=DIR     # a python3 that already holds torch: installs nothing
#   scripts/gpu_check.sh wheels                     # here, with network: the packages a bare GPU image lacks, in .whl/
#
# On a GPU machine without network whose python3 has torch, torchvision, lightning, torchmetrics, timm, pytest and
# pytest-xdist but not hydra-core, omegaconf, av or pytorchvideo (a bare GPU image without network), carry `.whl`
# (made by `scripts/gpu_check.sh wheels`) and run this one line (carry: [".whl"]):
#   bash scripts/gpu_check.sh "$OUT"
# The wheels in .whl/ are installed offline into /tmp/site (pip --no-index); nothing is fetched.
# Time limits, 7 minutes in all (GPU_CHECK_SECONDS=420): install 30 s, unmarked tests 150 s, slow cuda tests 60 s, the
# benchmark what is left (at least 90 s; its --budget-s lists the rows that would start later as skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}

if [ "${1:-}" = wheels ]; then  # pure-python sdists are built into wheels here; av is a manylinux wheel
	set -e
	version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
	mkdir -p .whl
	pins=()
	for name in hydra-core omegaconf av parameterized yacs termcolor submitit hydra-submitit-launcher; do
		pins+=("$name==$(version "$name")")
	done
	"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
	"$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)" \
		"pytorchvideo==$(version pytorchvideo)" "fvcore==$(version fvcore)" "iopath==$(version iopath)"
	du -sh .whl
	exit 0
fi

OUT=${1:-gpu-check}
TOTAL_S=${GPU_CHECK_SECONDS:-420}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import hydra, omegaconf, av, pytorchvideo" 2>/dev/null; then
	if ls .whl/*.whl >/dev/null 2>&1; then
		timeout 30 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
			|| { echo "gpu-check: installing .whl/ failed"; exit 1; }
		export PYTHONPATH="$PYTHONPATH:/tmp/site"
	else
		echo "gpu-check: $PY lacks hydra/omegaconf/av/pytorchvideo and there is no .whl/ (scripts/gpu_check.sh wheels)"
		exit 1
	fi
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count() and torch.cuda.get_device_name())"
"$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || echo "gpu-check: no CUDA device: the tests and benchmark run on CPU only"

# xdist workers where the plugin is there: each takes 2 CPU threads (tests/conftest.py); GPU work is small per test.
opts=(-q -p no:cacheprovider)
workers=$(nproc)
"$PY" -c "import xdist" 2>/dev/null && [ "$workers" -ge 4 ] && opts+=(-n $((workers / 2)))
status=0
timeout -k 10 150 "$PY" -m pytest -m "not e2e and not slow and not slurm" "${opts[@]}" 2>&1 \
	| tee "$OUT/pytest_fast.log" | tail -n 40 || status=1
# The heavier tests' cuda items only (their cpu items run in make test-slow anywhere).
timeout -k 10 60 "$PY" -m pytest -m slow -k cuda "${opts[@]}" 2>&1 \
	| tee "$OUT/pytest_slow_cuda.log" | tail -n 20
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || status=1  # 5: no cuda item collected (a machine without CUDA)
left=$((TOTAL_S - SECONDS - 40))  # 40 s: a compile started just before the budget ends, and the output
[ "$left" -ge 90 ] || left=90
timeout -k 10 $((left + 30)) "$PY" scripts/benchmark.py --only kernels inference throughput training --compile blocks \
	--repeats 10 --budget-s "$left" --out "$OUT/benchmarks_gpu.md" >"$OUT/benchmark.log" 2>&1 || status=1
grep -v '^\(USDT\|ERROR:.*DeviceProperties\)' "$OUT/benchmark.log" | tail -n 15
cat "$OUT/benchmarks_gpu.md"
echo "gpu-check: wrote $OUT/ (status $status)"
exit $status
