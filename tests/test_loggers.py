"""The logger group: TensorBoard, W&B (offline), MLflow (local file store) and CSV, several at once, as typed on
the command line; the scalars and report images each one recorded, read back with its own reader."""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import pytest
import torch

from .helpers import compose_cfg

LOSSES = [3.0, 2.5, 1.75]  # train/loss at steps 0, 1, 2 (exact in fp32: every logger stores it unchanged)
TOP1 = 0.25  # val/top1 at the epoch's end
ALL = "logger=[csv,tensorboard,wandb,mlflow]"


def test_logger_groups_compose(tmp_path):
    """The default keeps CSV and adds TensorBoard; a list as typed on the command line selects several (all four:
    the fixture below); ~logger none."""
    keys = lambda *ov: list((compose_cfg(list(ov), tmp_path, tmp_path).get("logger") or {}).keys())  # noqa: E731
    assert keys() == ["csv", "tensorboard"]
    assert keys("logger=[csv,tensorboard]") == ["csv", "tensorboard"]
    assert keys("~logger") == []


def _module():
    import lightning as L

    class Tiny(L.LightningModule):
        """Logs LOSSES[step] as train/loss and TOP1 as val/top1: known values to find in every logger."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, batch_idx):
            self.log("train/loss", LOSSES[batch_idx], on_step=True, on_epoch=False)
            return (self.w * batch[0]).sum()

        def on_train_epoch_end(self) -> None:
            self.log("val/top1", TOP1)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def train_dataloader(self):
            data = torch.utils.data.TensorDataset(torch.ones(len(LOSSES), 1))
            return torch.utils.data.DataLoader(data, batch_size=1)

    return Tiny()


def _fit(out: Path, selection: str) -> dict:
    """One tiny fit with the loggers of ``selection`` as typed on the command line (W&B offline: no network, no
    login), then a report image sent to them; the loggers by class name."""
    import lightning as L
    from hydra.utils import instantiate

    from mvit_video.reports import send_to_loggers

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.delenv("WANDB_API_KEY", raising=False)
        cfg = compose_cfg([selection], out, out / "data")
        loggers = [instantiate(c) for c in cfg.logger.values()]
        trainer = L.Trainer(
            max_epochs=1,
            logger=loggers,
            log_every_n_steps=1,
            accelerator="cpu",
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        trainer.fit(_module())
        png = _png(out / "reports" / "confusion_matrix.png")
        send_to_loggers(loggers, [png], step=trainer.global_step)
        for lg in loggers:
            lg.finalize("success")
        if "wandb" in selection:
            import wandb

            wandb.finish()  # closes the offline run file
    return {type(lg).__name__: lg for lg in loggers}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default loggers, CSV and TensorBoard (cheap imports: the unmarked tests)."""
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("default_loggers")
    return out, _fit(out, "logger=[csv,tensorboard]")


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """All four at once, one tiny fit (about 2.3 s with the imports of mlflow and wandb and W&B's offline run): each
    logger's scalars are read back in `make test`, as issue 19 asks."""
    for name in ("tensorboard", "wandb", "mlflow"):
        pytest.importorskip(name)
    out = tmp_path_factory.mktemp("loggers")
    return out, _fit(out, ALL)


def _png(path: Path) -> Path:
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(1, 1))
    fig.subplots().imshow([[0, 1], [1, 0]])
    fig.savefig(path, dpi=32)
    return path


def test_csv_logged(default_run):
    out, _ = default_run
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [(int(r["step"]), float(r["train/loss"])) for r in rows if r["train/loss"]] == list(enumerate(LOSSES))


def _tensorboard_scalars_and_image(out: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == list(enumerate(LOSSES))
    assert [e.value for e in acc.Scalars("val/top1")] == [TOP1]
    assert [e.step for e in acc.Images("test/confusion_matrix")] == [len(LOSSES)]


def test_tensorboard_scalars_and_image(default_run):
    _tensorboard_scalars_and_image(default_run[0])


def test_all_four_at_once_csv_and_tensorboard(logged_run):
    out, loggers = logged_run
    assert sorted(loggers) == ["MLFlowLogger", "ResumableCSVLogger", "ResumableTensorBoardLogger", "WandbLogger"]
    _tensorboard_scalars_and_image(out)
    test_csv_logged(logged_run)


def test_mlflow_metrics_and_artifact(logged_run):
    from mlflow.tracking import MlflowClient

    out, loggers = logged_run
    lg = loggers["MLFlowLogger"]
    assert lg._tracking_uri == f"file:{out}/mlruns"  # the run dir's store
    client = MlflowClient(tracking_uri=lg._tracking_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(lg.run_id, "train/loss")] == list(enumerate(LOSSES))
    assert [m.value for m in client.get_metric_history(lg.run_id, "val/top1")] == [TOP1]
    assert [a.path for a in client.list_artifacts(lg.run_id, "reports")] == ["reports/confusion_matrix.png"]


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (``run-*.wandb``): a LevelDB-style log (7-byte header ``:W&B``,
    0xBEE1, version; 32 KiB blocks of chunks ``crc32 (4) length (2, little-endian) type (1)``; full = 1, first = 2,
    middle = 3, last = 4) of ``wandb_internal_pb2.Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_history(logged_run):
    import json

    out, _ = logged_run
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")  # offline: everything stays in the run dir
    history = []
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:  # a key, or a nested one (an image's fields)
            *parents, leaf = [item.key] if item.key else list(item.nested_key)
            node = row
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = json.loads(item.value_json)
        history.append(row)
    losses = [(h["trainer/global_step"], h["train/loss"]) for h in history if "train/loss" in h]
    assert losses == list(enumerate(LOSSES))
    assert [h["val/top1"] for h in history if "val/top1" in h] == [TOP1]
    image = [h["test/confusion_matrix"] for h in history if "test/confusion_matrix" in h]
    assert len(image) == 1 and image[0]["_type"] == "images/separated"
    (png,) = image[0]["filenames"]
    assert (run_file.parent / "files" / png).stat().st_size > 0  # the PNG itself, in the offline run


def test_tensorboard_resume_same_dir_no_duplicate_steps(tmp_path):
    """A resumed run writes into the run dir's tensorboard/ again (no version_1) and TensorBoard shows each step
    once: the stopped run's steps from the checkpoint on (logged again after the resume) are purged."""
    pytest.importorskip("tensorboard")
    from hydra.utils import instantiate
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_cfg(["logger=tensorboard"], tmp_path, tmp_path / "data")
    first = instantiate(cfg.logger.tensorboard)
    for step in range(5):  # the stopped run: checkpoint at step 3, steps 3 and 4 logged after it
        first.log_metrics({"train/loss": float(step)}, step)
    first.finalize("success")
    second = instantiate(cfg.logger.tensorboard)
    assert Path(second.log_dir) == Path(first.log_dir) == tmp_path / "tensorboard"
    second.continue_from(3)  # what train._continue_logs does with the checkpoint's global_step
    for step in range(3, 6):
        second.log_metrics({"train/loss": 10.0 + step}, step)
    second.finalize("success")
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(0, 0), (1, 1), (2, 2), (3, 13), (4, 14), (5, 15)]


@pytest.mark.slow
def test_resumed_run_continues_tensorboard_without_duplicates(tmp_path, tiny_kinetics):
    """train.run twice (1 epoch, then resumed to 2 with ckpt_path=last): one tensorboard/ dir, every step once,
    and the same steps as the CSV log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mvit_video.train import run

    base = ["debug=tiny", "data.num_classes=4", "data.crop_size=48", "data.train_jitter_scales=[48,60]", "test=false"]
    base += [f"data.root={tiny_kinetics}", "data.synthetic=null", "logger=[csv,tensorboard]"]
    run(compose_cfg([*base, "trainer.max_epochs=1"], tmp_path, tmp_path / "data"))
    run(compose_cfg([*base, "trainer.max_epochs=2", "ckpt_path=last"], tmp_path, tmp_path / "data"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(("tensorboard", "version"))] == ["tensorboard"]
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss_step")]
    assert steps == sorted(set(steps)) == [0, 1, 2, 3]  # 2 batches per epoch (debug=tiny), 2 epochs
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows if r.get("train/loss_step")] == steps


def test_missing_tensorboard_says_what_to_do(tmp_path, monkeypatch):
    import importlib.util

    from mvit_video.callbacks import ResumableTensorBoardLogger

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    with pytest.raises(ImportError, match="pip install tensorboard .*run with logger=csv"):
        ResumableTensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="")
