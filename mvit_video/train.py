"""``run(cfg)``: build everything from the Hydra config, train, test, report. The config stops here."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from .callbacks import EndOfTestReports
from .models.convert import load_pretrained

log = logging.getLogger(__name__)


def config_root() -> str:
    """The directory above the primary config directory (``conf/``): the repository, wherever the run starts from.
    Without a Hydra run (the compose API) the working directory."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return str(Path(source.path).resolve().parent)
    return "."


def register_resolvers() -> None:
    """``${mul:a,b}``: the official recipes scale learning rates by the number of nodes. ``${config_root:}``: the
    repository (``paths.root_dir``). ``${folder_num_classes:ROOT}``: a folder dataset's class count (experiment=finetune),
    resolvable before the datamodule exists (model_report, recipe_diff). And ``model=<preset>``: one option of the
    model group per registered preset."""
    from .data.folder import register_resolvers as register_folder_resolvers

    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
    if not OmegaConf.has_resolver("config_root"):
        OmegaConf.register_new_resolver("config_root", config_root)
    register_folder_resolvers()
    register_model_presets()


def register_model_presets() -> None:
    """``model=mvitv2_b_32x3`` as ``model.name=mvitv2_b_32x3``: for each preset of the registry, a model-group option
    that is conf/model/mvitv2.yaml with that ``name`` (generated, so the names live in the registry only)."""
    from hydra.core.config_store import ConfigStore

    from .models import list_models

    store = ConfigStore.instance()
    for preset in list_models():
        store.store(group="model", name=preset, node={"defaults": ["mvitv2", "_self_"], "name": preset})


register_resolvers()


def _instantiate_dict(group: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (group or {}).values() if c is not None and "_target_" in c]


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and/or test as ``cfg`` says; returns the final metrics (so tests and sweeps can call it)."""
    start = time.time()
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = _resolve_ckpt_path(cfg, output_dir)  # a run dir without last.ckpt: fail before any work

    datamodule = instantiate(cfg.data)
    with _file_lock(Path(cfg.paths.data_dir) / ".prepare.lock"):  # every process of a multi-node job gets here
        datamodule.prepare_data()  # synthetic data is generated (once) here
    datamodule.check_files(train=cfg.train, test=cfg.test)  # fail before building a big model

    net = instantiate(cfg.model)
    if cfg.get("init_from"):
        load_pretrained(getattr(net, "backbone", net), cfg.init_from, strict_head=False, init_mode=cfg.get("init_mode"))
        log.info("initialised backbone from %s", cfg.init_from)
    task = instantiate(cfg.task, net=net, **_task_data(cfg, datamodule), _convert_="all")  # plain dicts and lists
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    reports = EndOfTestReports(output_dir / "reports") if cfg.test else None  # confusion matrix, per-class plots
    callbacks += [reports] if reports else []
    loggers = _instantiate_dict(cfg.get("logger"))
    plugins = []
    if SLURMEnvironment.detect():  # ranks from SLURM; requeue on preemption is ours (callbacks.Preemption), not
        plugins.append(SLURMEnvironment(auto_requeue=False))  # Lightning's rank-0-only SIGUSR1 handler as well
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins or None)

    if ckpt_path is not None and cfg.train:
        _continue_logs(trainer, Path(ckpt_path))

    metrics: dict[str, float] = {}
    try:
        _fit_and_test(cfg, trainer, task, datamodule, ckpt_path, metrics)
    except SIGTERMException as stop:  # Lightning's SIGTERM handler outside training (setup, sanity check, test)
        raise SystemExit(128 + signal.SIGTERM) from stop  # its SystemExit has no code: the shell would see 0
    metrics["time_s"] = time.time() - start
    if trainer.is_global_zero:
        plot_curves(output_dir / "metrics.csv", output_dir / "curves.png")
        print_summary(metrics, output_dir, reports.report if reports else None)
    return metrics


def _task_data(cfg: DictConfig, datamodule) -> dict[str, Any]:
    """What the task needs from the data, given at build time (a task never reads the trainer's datamodule): the
    preprocessing for its checkpoints and, where the config leaves them null, the evaluated class ids."""
    out: dict[str, Any] = {"metadata": datamodule.metadata()}
    if "class_ids" in cfg.task and cfg.task.class_ids is None:
        out["class_ids"] = list(datamodule.class_names)
    return out


def _fit_and_test(
    cfg: DictConfig, trainer: L.Trainer, task, datamodule, ckpt_path: str | None, metrics: dict[str, float]
) -> None:
    if cfg.train:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(_floats(trainer.callback_metrics))
    if cfg.test:
        best = _best_checkpoint(trainer) if cfg.train else ckpt_path
        trainer.test(task, datamodule=datamodule, ckpt_path=best)
        metrics.update(_floats(trainer.callback_metrics))  # test/* and, with the control, test_time_shuffled/*


def _resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``ckpt_path``, with ``last`` made this run dir's ``checkpoints/last.ckpt``. A missing last.ckpt is an error
    (a new run dir is the usual cause), except for a requeued SLURM job preempted before its first save."""
    ckpt_path = cfg.get("ckpt_path")
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    requeued = ckpt_path is None and restarts > 0
    if requeued:
        ckpt_path = "last"  # a requeued SLURM job (preempted or timed out): go on from its run dir's last.ckpt
        log.info("SLURM restart %d: resuming from last.ckpt", restarts)
    if ckpt_path != "last":
        return ckpt_path
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return str(last)
    if requeued:
        log.warning("SLURM restart %d: no %s (stopped before its first checkpoint): starting from scratch", restarts, last)
        return None
    runs = Path(cfg.paths.log_dir) / cfg.task_name
    found = sorted(runs.glob("*runs/**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    hint = "\n".join(f"    hydra.run.dir={p.parent.parent}" for p in found[:5]) or f"    (none under {runs})"
    raise FileNotFoundError(
        f"ckpt_path=last: no checkpoint to resume: {last} does not exist.\n"
        f"  ckpt_path=last resumes the run in the run dir, which is {output_dir}; point hydra.run.dir=<run dir> at the "
        "earlier run (a new command gets a new, timestamped run dir), or give ckpt_path=/path/to/file.ckpt.\n"
        f"  Run dirs with a last.ckpt, newest first:\n{hint}"
    )


def _continue_logs(trainer: L.Trainer, ckpt_path: Path) -> None:
    """A resumed run continues the logs of the run dir: the CSV rows and TensorBoard steps before the checkpoint's
    step are kept, those after it (logged again) dropped (``continue_from``: ``callbacks.Resumable*Logger``)."""
    loggers = [lg for lg in trainer.loggers if hasattr(lg, "continue_from")]
    if not loggers:
        return
    try:  # mmap: reads the few bytes of global_step, not the weights
        step = int(torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True)["global_step"])
    except Exception as err:  # noqa: BLE001  (fit reports a bad checkpoint with Lightning's own error)
        log.warning("could not read global_step from %s (%s): the logs start anew", ckpt_path, err)
        return
    for lg in loggers:
        lg.continue_from(step)


@contextlib.contextmanager
def _file_lock(path: Path):
    """One process at a time (flock): the others then find the data ready and skip generating it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    if cb is not None and getattr(cb, "best_model_path", ""):
        return cb.best_model_path
    return None


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    scalar = lambda v: isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)  # noqa: E731
    return {k: float(v) for k, v in metrics.items() if scalar(v)}


def plot_curves(metrics_csv: Path, out_png: Path) -> Path | None:
    """Training loss per step and validation top-1 per epoch from the CSV logger's file."""
    if not metrics_csv.is_file():
        return None
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (e.g. a notebook's) alone

    rows = list(csv.DictReader(metrics_csv.open()))

    def series(key: str, x: str) -> tuple[list[float], list[float]]:
        pts = [(float(r[x]), float(r[key])) for r in rows if r.get(key) not in (None, "") and r.get(x) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(*series("train/loss_step", "step"), lw=0.8, alpha=0.6, label="train loss (step)")
    ax1.plot(*series("val/loss", "step"), "o-", label="val loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, style in (("train/top1", "s--"), ("val/top1", "o-"), ("val/top5", "^:")):
        x, y = series(key, "epoch")
        if x:
            ax2.plot(x, y, style, label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1.02)
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return out_png


def print_summary(metrics: dict[str, float], output_dir: Path, report: Any = None) -> None:
    """The run's numbers and, from ``report`` (``reports.ClassReport``: per-class test values), the worst-classified
    classes."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mvit_video run: {output_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = ["val/mAP", "test/mAP", "val/top1", "val/top5", "test/top1", "test/top5"]
    keys += ["test_time_shuffled/top1", "test_time_shuffled/top5", "test_time_shuffled/mAP"]
    for key in keys:
        if key in metrics and math.isfinite(metrics[key]):
            table.add_row(key, f"{100 * metrics[key]:.1f}%")
    for key in ("val/videos", "val/unreadable_videos", "test/videos", "test/unreadable_videos"):  # what top1 covers
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.0f}")
    worst = report.worst() if report is not None else []
    for name, value, count in worst:
        videos = f" of {count} videos" if report.metric == "accuracy" else ""
        table.add_row(f"worst: {name}", f"{100 * value:.1f}% {report.metric}{videos}")
    table.add_row("time", f"{metrics['time_s']:.0f} s")
    table.add_row("checkpoints", str(output_dir / "checkpoints"))
    table.add_row("metrics / curves", f"{output_dir / 'metrics.csv'} / {output_dir / 'curves.png'}")
    if worst:
        table.add_row("per-class reports", str(output_dir / "reports"))
    Console().print(table)
