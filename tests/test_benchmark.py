"""scripts/benchmark.py through its main(argv): a subset runs in this process and writes its table (numbers not
judged: speed claims are ratios the benchmark prints, never timed tests). The GPU steps (kernels, throughput) run their
logic on CPU with the tiny preset, so a mistake in them does not cost a GPU run; make gpu-check's wiring is checked
with make -n."""

import argparse
import functools
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = runpy.run_path(str(ROOT / "scripts" / "benchmark.py"))


def run(tmp_path, *args: str) -> str:
    out = tmp_path / "bench.md"
    assert BENCH["main"]([*args, "--out", str(out), "--data-dir", str(tmp_path)]) == 0
    return out.read_text()


def section_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with ``header``."""
    lines = text[text.index(header) :].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")]


def test_ava_subset_writes_its_row(tmp_path, capsys):
    text = run(tmp_path, "--tiny", "--only", "ava", "--ava-rows", "2000")
    assert "| AVA frame-mAP, 2,000 detections, 100 boxes |" in text and "(same mAP: True)" in text
    assert "peak memory" not in text and "wrote" in capsys.readouterr().out


def test_kernels_step_tries_each_backend_alone_and_names_the_default(tmp_path):
    """On CPU, PyTorch has no memory-efficient or cuDNN attention, so those are rejected, math always accepts, and the
    default dispatch of our unmasked calls is the CPU flash kernel (read off the profiler)."""
    text = run(tmp_path, "--tiny", "--only", "kernels", "--repeats", "1", "--batch", "1", "--device", "cpu")
    rows = section_rows(text, "| precision |")
    assert [r[0] for r in rows] == ["float32", "bfloat16"]
    for _, calls, flash, efficient, cudnn, math, picked, fastest in rows:
        assert re.fullmatch(r"5 \(\d+(/\d+)*\)", calls), calls  # the tiny model: 5 blocks, one attention call each
        assert efficient == cudnn == "rejected" and flash.endswith(" s") and math.endswith(" s")
        assert picked.endswith(": flash") and fastest in ("flash", "math")


def test_throughput_rows_past_the_budget_are_listed_as_skipped(tmp_path):
    """--budget-s: a row that would start after the budget is a 'skipped' line, not a run past the time limit."""
    text = run(tmp_path, "--tiny", "--only", "throughput", "--budget-s", "0", "--device", "cpu")
    rows = section_rows(text, "| model | batch |")
    modes = ["eager"] * 2 + ["checkpointing"] * 2 + ["compiled"] * 2  # compiled last: bf16, then fp32
    assert [r[3] for r in rows] == modes and [r[2] for r in rows] == ["fp32", "bf16", "fp32", "bf16", "bf16", "fp32"]
    assert all(r[4] == "skipped: --budget-s spent" for r in rows)


def test_compiled_rows_and_share_of_peak_in_the_table():
    """The compiled inference rows: times, the compile, ours / torchvision, and the share of the matmul peak."""
    args = argparse.Namespace(tiny=False, compile="blocks", compile_backend="inductor", freezing=False, repeats=3)
    peak, flops = 1e11, 2 * 64.46e9
    inf = {"peak_flops": peak, "ours_s": 2.0, "torchvision_s": 2.5, "ratio": 0.8, "max_logit_diff": 1e-6}
    inf |= {"ours_compiled_s": 1.6, "torchvision_compiled_s": 2.0, "ours_compiled_first_s": 90.0}
    inf |= {"torchvision_compiled_first_s": 120.0, "ours_compiled_diff": 2e-6}
    for k in ("ours", "torchvision", "ours_compiled", "torchvision_compiled"):
        inf[f"{k}_share"] = flops / inf[f"{k}_s"] / peak
    inf["share"] = inf["ours_share"]
    text = BENCH["table"]({"machine": "m", "inference": inf}, args, "cpu", "cmd")
    row = next(r for r in section_rows(text, "| what |") if r[0].startswith("inference, compiled: share"))
    assert row[1:] == [f"{100 * flops / 1.6 / peak:.1f}%", f"torchvision {100 * flops / 2.0 / peak:.1f}%", "", ">= 75%"]
    row = next(r for r in section_rows(text, "| what |") if "torch.compile (inductor, each block)" in r[0])
    assert "compile (first call) 90 s / 120 s" in row[0] and row[1:4] == ["1.600 s", "torchvision 2.000 s", "0.80"]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine (a bare GPU image may lack it)")
def test_make_gpu_check_with_another_python_installs_nothing():
    """`make gpu-check PY=python3` (a GPU machine's own python, no network) runs the script and no pip install."""
    # as from a shell: under `make test` the parent make's variables would make this one print "Entering directory"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry_run = functools.partial(subprocess.run, cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    res = dry_run(["make", "-n", "gpu-check", "PY=python3"])
    assert res.stdout.strip().splitlines() == ["PY=python3 bash scripts/gpu_check.sh gpu-check"]
    res = dry_run(["make", "-n", "gpu-check"])
    assert res.stdout.strip().splitlines()[-1] == "PY=.venv/bin/python bash scripts/gpu_check.sh gpu-check"


@pytest.mark.slow  # every GPU step's code on CPU: the compiled settings through aot_eager (inductor: make gpu-check)
def test_gpu_steps_run_on_cpu_with_the_tiny_preset(tmp_path):
    """The steps make gpu-check runs, same flags but the device, preset and compiler backend: no row fails."""
    args = ("--tiny", "--only", "kernels", "inference", "throughput", "training", "--compile", "blocks")
    text = run(tmp_path, *args, "--compile-backend", "aot_eager", "--repeats", "1", "--device", "cpu", "--profile", "5")
    rows = section_rows(text, "| model | batch |")
    assert [r[3] for r in rows] == ["eager"] * 2 + ["checkpointing"] * 2 + ["compiled"] * 2
    assert all(float(r[4]) > 0 and float(r[5]) > 0 for r in rows) and all(r[7].endswith(" s") for r in rows[4:])
    assert "inference, compiled / eager (max logit diff" in text and "training step, compiled / eager" in text
    assert "Where one inference of ours_compiled spends its time" in text and "failed" not in text
