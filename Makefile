# Every target installs what it needs first; a second run skips the install (stamp file).
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The test ladder (markers in pyproject.toml; .ci/run runs every stage, about 15 min in all):
#   make test       unmarked tests, < 4 min on 2 cores: run it before every commit
#   make test-e2e   whole programs as users run them: notebooks, make demo, the benchmark's smoke run, signals to train.py
#   make test-slow  heavier tests: big presets, longer trainings, README recipes in tiny form
#   make test-slurm multi-node runs on a 2-node Slurm cluster on this host (root)
#   make gpu-check  on a GPU machine: the tests with cuda joining cpu, then the GPU benchmark (scripts/gpu_check.sh);
#                   `make gpu-check PY=python3` uses a python3 that holds torch and installs nothing
PYTEST_FAST := -m "not e2e and not slow and not slurm"
# FFmpeg's shared libraries for the torchcodec decoder (Debian 12 names; any FFmpeg 4-7 works).
FFMPEG_DEBS := libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8

.PHONY: install test test-e2e test-slow test-slurm gpu-check demo train lint bench report clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first, pinned to the builds served from this machine's disk.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev,slurm,export,decoders,logging,stream,hub]"
	# Debian's ffmpeg: the CLI writes the tests' real-world video zoo (tests/video_zoo.py); it brings FFmpeg's libraries.
	@{ command -v ffmpeg >/dev/null && ldconfig -p | grep -q 'libavcodec\.so\.'; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get install -y -q --no-install-recommends ffmpeg $(FFMPEG_DEBS) >/dev/null \
		|| { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends ffmpeg $(FFMPEG_DEBS) >/dev/null; }; }; } \
		|| echo "note: no ffmpeg and no root to apt-get it: the torchcodec and video-zoo tests will skip"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_FAST) -q

test-e2e: $(STAMP)
	$(PY) -m pytest -m e2e -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

# Multi-node tests on a real 2-node Slurm cluster on this host (Debian's slurm-wlm and munge, installed as root).
test-slurm: $(STAMP)
	scripts/slurm_cluster.sh install
	$(PY) -m pytest -m slurm -q

# Results in $(GPU_CHECK_OUT)/: benchmarks_gpu.md and the pytest logs. With PY=other, no .venv is made.
GPU_CHECK_OUT ?= gpu-check
gpu-check: $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))
	PY=$(PY) bash scripts/gpu_check.sh $(GPU_CHECK_OUT)

demo: $(STAMP)
	$(PY) train.py experiment=demo

lint: $(STAMP)
	$(PY) -m ruff check mvit_video scripts tests train.py hubconf.py
	$(PY) -m ruff format --check mvit_video scripts tests train.py hubconf.py

bench: $(STAMP)
	$(PY) scripts/benchmark.py

report: $(STAMP)
	$(PY) scripts/model_report.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
