"""Multi-node training on a real Slurm cluster (2 slurmd on this host), through Hydra's submitit launcher.

Run by ``make test-slurm`` (installs slurm-wlm and munge as root, then ``pytest -m slurm``). The cluster lives in a
temporary folder and is stopped by its daemons' pids at the end, whatever happens.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mvit_video.data.synthetic import SyntheticSpec, make_synthetic_kinetics

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
SPEC = SyntheticSpec(train_per_class=6, val_per_class=1, test_per_class=1, min_seconds=1.0, max_seconds=1.5)
STEPS_PER_EPOCH = 6  # 48 training videos / global batch 8
COMMON = [
    "experiment=demo",
    "debug=tiny",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=1.0",
    "trainer.limit_val_batches=1.0",
    "data.synthetic.train_per_class=6",
    "test=false",
    # debug=tiny's model has no dropout / drop path: their masks are drawn per process, so 2 x 4 clips could not
    # draw the masks 8 clips do.
]
TWO_NODES = [
    "hydra/launcher=slurm",
    "trainer.num_nodes=2",
    "trainer.devices=1",
    "trainer.strategy=ddp",
    "data.batch_size=4",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=15",
    "hydra.launcher.setup=['export MASTER_ADDR=127.0.0.1']",  # both "nodes" are this host
]
JOB_TIMEOUT = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    up = subprocess.run([str(ROOT / "scripts/slurm_cluster.sh"), "up", str(state)], capture_output=True, text=True)
    assert up.returncode == 0, f"could not start the local Slurm cluster:\n{up.stdout}\n{up.stderr}"
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    data = tmp_path_factory.mktemp("data")
    make_synthetic_kinetics(data / "synthetic_kinetics", SPEC, workers=2)  # once, before the jobs
    try:
        yield env, data
    finally:
        subprocess.run([str(ROOT / "scripts/slurm_cluster.sh"), "down", str(state)], check=False)


def _train(env: dict, data: Path, overrides: list[str], multirun: bool, wait: bool = True):
    cmd = [sys.executable, "train.py", *(["-m"] if multirun else []), *COMMON, f"paths.data_dir={data}", *overrides]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=JOB_TIMEOUT)
    assert proc.returncode == 0, out[-4000:]
    return out


def _losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}


def _logs(sweep: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(sweep.glob(".submitit/*/*_log.*")))


@pytest.fixture(scope="module")
def two_node_run(cluster, tmp_path_factory):
    env, data = cluster
    sweep = tmp_path_factory.mktemp("sweep")
    _train(env, data, [*TWO_NODES, f"hydra.sweep.dir={sweep}"], multirun=True)
    return sweep


def test_two_nodes_train_as_one_process_with_the_same_global_batch(cluster, two_node_run, tmp_path):
    env, data = cluster
    logs = _logs(two_node_run)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs  # both ranks ran
    single = tmp_path / "single"
    _train(
        {k: v for k, v in env.items() if not k.startswith("SLURM_")},
        data,
        ["data.batch_size=8", f"hydra.run.dir={single}"],
        multirun=False,
    )
    two, one = _losses(two_node_run / "0"), _losses(single)
    assert len(one) == 3 * STEPS_PER_EPOCH and sorted(two) == sorted(one)
    # Same samples, augmentations and dropout per step; only the order of float reductions differs (DDP averages
    # gradients over 2 x 4 clips, one process over 8): losses agree to 1e-4 over 18 steps.
    for step in one:
        assert abs(two[step] - one[step]) < 1e-4, (step, two[step], one[step])


def test_preemption_signal_requeues_and_resumes_to_the_same_result(cluster, two_node_run, tmp_path):
    env, data = cluster
    sweep = tmp_path / "sweep"
    proc = _train(env, data, [*TWO_NODES, f"hydra.sweep.dir={sweep}"], multirun=True, wait=False)
    try:
        first_epoch = sweep / "0" / "checkpoints" / "last.ckpt"
        deadline = time.time() + JOB_TIMEOUT
        while not first_epoch.is_file():  # end of epoch 0: the job is running and training
            assert proc.poll() is None and time.time() < deadline, "the job did not start training"
            time.sleep(0.2)
        job = next(sweep.glob(".submitit/*/*_submission.sh")).parent.name
        subprocess.run(["scancel", "--signal=USR2", job], env=env, check=True)  # what SLURM sends before the end
        # Slurm holds a requeued job for about 2 minutes before it is eligible again; let it start now.
        while proc.poll() is None and time.time() < deadline:
            state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%t"], env=env, capture_output=True, text=True)
            if state.stdout.strip() == "PD":
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=False)
                break
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=JOB_TIMEOUT)
        assert proc.returncode == 0, out[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = _logs(sweep)
    assert "preemption checkpoint at global step" in logs and "scontrol requeue" in logs
    assert "SLURM restart 1: resuming from last.ckpt" in logs
    step = int(logs.split("preemption checkpoint at global step ")[1].split(":")[0])
    assert STEPS_PER_EPOCH <= step < 3 * STEPS_PER_EPOCH
    # The resumed run ends where the uninterrupted one does: same step count and the same weights.
    resumed = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    plain = torch.load(two_node_run / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == plain["global_step"] == 3 * STEPS_PER_EPOCH
    for key, value in plain["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-5, msg=key)
    last = 3 * STEPS_PER_EPOCH - 1
    assert _losses(sweep / "0")[last] == pytest.approx(_losses(two_node_run / "0")[last], abs=1e-5)


def test_a_two_point_sweep_submits_two_jobs_and_finds_both_results(cluster, tmp_path):
    env, data = cluster
    sweep = tmp_path / "sweep"
    _train(
        env, data, [*TWO_NODES, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", "task.optimizer.lr=1e-4,5e-4"], multirun=True
    )
    jobs = {p.parent.name for p in sweep.glob(".submitit/*/*_0_log.out")}
    assert len(jobs) == 2, jobs  # one Slurm job per sweep point (a job array: 1_0, 1_1)
    for point, lr in (("0", "0.0001"), ("1", "0.0005")):
        assert (sweep / point / "checkpoints" / "last.ckpt").is_file()
        assert f"task.optimizer.lr={lr}" in (sweep / point / ".hydra" / "overrides.yaml").read_text()
        assert _losses(sweep / point)
