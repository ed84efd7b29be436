"""Stopping and resuming lose nothing, tested as users do it: ``python train.py ...`` as a subprocess, a signal
from outside (Ctrl-C to the process group, ``kill PID``, SLURM's SIGUSR2), then ``ckpt_path=last`` in the same run
dir. The resumed run must end with the weights and optimizer state of an uninterrupted run, and its metrics.csv must
hold every step once."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH, EPOCHS = 4, 2  # the tiny dataset: 16 training videos, batch 4
SIGNAL_AFTER = 5  # global step at which the test sends its signal: the checkpoint follows at step 6 (epoch 1, mid-epoch)


def _overrides(data_root: Path, tmp: Path, workers: int = 0) -> list[str]:
    # debug=tiny: the tiny model at crop 32 on CPU, batch 4, metrics logged every step
    return [
        "debug=tiny",
        f"data.root={data_root}",
        f"paths.data_dir={tmp / 'data'}",
        "data.num_classes=4",
        f"data.num_workers={workers}",
        "data.test_num_clips=1",
        "data.test_num_crops=1",
        "model.drop_path_rate=0.1",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.limit_train_batches=null",
        "test=false",
    ]


def _train(args: list[str], run_dir: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # tests.helpers, for the marker callback
    cmd = [sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def uninterrupted(tiny_kinetics, tmp_path_factory):
    """The uninterrupted run's dir, per number of workers (made once for the module): the workers' clips differ
    from the main process's in the last bits (threads in the resize), so each case compares with its own kind."""
    runs: dict[int, Path] = {}

    def get(workers: int) -> Path:
        if workers not in runs:
            tmp = tmp_path_factory.mktemp(f"plain{workers}")
            proc = _train(_overrides(tiny_kinetics, tmp, workers), tmp / "run")
            out = _finish(proc)
            assert proc.returncode == 0, out[-4000:]
            runs[workers] = tmp / "run"
        return runs[workers]

    return get


def _stop_and_resume(uninterrupted, tiny_kinetics: Path, tmp_path: Path, signum: int, workers: int, group: bool) -> None:
    plain_dir = uninterrupted(workers)
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    waiter = [
        "+callbacks.wait._target_=tests.helpers.WaitForSignalAtStep",
        f"+callbacks.wait.step={SIGNAL_AFTER}",
        f"+callbacks.wait.marker={marker}",
    ]
    proc = _train([*_overrides(tiny_kinetics, tmp_path, workers), *waiter], run_dir, start_new_session=True)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), _finish(proc)[-4000:]
    if group:  # a terminal's Ctrl-C, SLURM: every process of the group, DataLoader workers too
        os.killpg(proc.pid, signum)
    else:  # kill PID, docker stop: the main process only
        proc.send_signal(signum)
    out = _finish(proc)
    assert proc.returncode == 128 + signum, out[-4000:]
    saved = _state(run_dir)
    assert saved["global_step"] == SIGNAL_AFTER + 1 and saved["epoch"] == 1, out[-4000:]  # mid-epoch
    assert saved["KineticsDataModule"] == {"epoch": 1, "batches": SIGNAL_AFTER + 1 - STEPS_PER_EPOCH}

    proc = _train([*_overrides(tiny_kinetics, tmp_path, workers), "ckpt_path=last"], run_dir)
    out = _finish(proc)
    assert proc.returncode == 0, out[-4000:]
    plain, resumed = _state(plain_dir), _state(run_dir)
    assert resumed["global_step"] == plain["global_step"] == STEPS_PER_EPOCH * EPOCHS
    for key, value in plain["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    for p, q in zip(plain["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(q[name], p[name], rtol=0, atol=1e-6)

    steps = [int(r["step"]) for r in _rows(run_dir) if r.get("train/loss_step")]
    assert steps == list(range(STEPS_PER_EPOCH * EPOCHS)), steps  # every step once, in order
    val = [r["epoch"] for r in _rows(run_dir) if r.get("val/top1")]
    assert val == [str(e) for e in range(EPOCHS)], val
    plain_losses = {r["step"]: float(r["train/loss_step"]) for r in _rows(plain_dir) if r.get("train/loss_step")}
    for r in _rows(run_dir):
        if r.get("train/loss_step"):
            assert float(r["train/loss_step"]) == pytest.approx(plain_losses[r["step"]], abs=1e-5), r["step"]


@pytest.mark.e2e  # a real `python train.py` killed from outside: ~50 s, in make test-e2e
def test_sigterm_checkpoints_exits_143_and_resumes_exactly(uninterrupted, tiny_kinetics, tmp_path):
    _stop_and_resume(uninterrupted, tiny_kinetics, tmp_path, signal.SIGTERM, workers=0, group=False)


@pytest.mark.slow
def test_ctrl_c_with_workers_checkpoints_exits_130_and_resumes_exactly(uninterrupted, tiny_kinetics, tmp_path):
    _stop_and_resume(uninterrupted, tiny_kinetics, tmp_path, signal.SIGINT, workers=2, group=True)


@pytest.mark.slow
def test_sigusr2_checkpoints_exits_140_and_resumes_exactly(uninterrupted, tiny_kinetics, tmp_path):
    _stop_and_resume(uninterrupted, tiny_kinetics, tmp_path, signal.SIGUSR2, workers=0, group=True)


def test_second_ctrl_c_stops_at_once(tmp_path):
    """The first Ctrl-C asks for a checkpoint at the next batch end; a second one (say, while a big checkpoint is
    being written) stops now with 130, and leaves Ctrl-C to the system (a third kills)."""
    from mvit_video.callbacks import Preemption

    stopper = Preemption(str(tmp_path))
    before = signal.getsignal(signal.SIGINT)
    try:
        stopper._install()
        os.kill(os.getpid(), signal.SIGINT)
        assert stopper.received == signal.SIGINT
        with pytest.raises(SystemExit) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs in this thread before sleep returns
        assert stop.value.code == 130
        assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) != stopper._handler  # the others given back
    finally:
        signal.signal(signal.SIGINT, before)
