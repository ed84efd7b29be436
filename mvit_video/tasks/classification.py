"""LightningModule for video classification: soft-target CE, mixup/cutmix, multi-view test."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..metrics.classification import MultiViewAccuracy, gather_names
from .mixup import MixupCutmix, smooth_one_hot
from .optim import configure_optimizers

log = logging.getLogger(__name__)


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_b sum_k -y_bk log softmax(z)_bk (targets not renormalised, as the official loss)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class VideoClassificationModule(L.LightningModule):
    """Receives a built ``net`` and optimiser/scheduler factories; never reads a config.

    ``optimizer``: ``partial(torch.optim.AdamW, lr=..., weight_decay=...)`` (weight decay is moved into param
    groups). ``scheduler``: ``partial(warmup_cosine, warmup_epochs=..., ...)``, called with the optimiser,
    steps per epoch and max epochs, stepped every optimiser step.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 400,
        label_smoothing: float = 0.1,
        mixup: MixupCutmix | None = None,
        layer_decay: float = 1.0,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "mixup"], logger=False)
        self.net = net
        if grad_checkpointing:
            net.set_grad_checkpointing(True)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mixup = mixup
        self.layer_decay = layer_decay
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_views: MultiViewAccuracy | None = None  # made per epoch: sized by the val/test dataset
        self.test_views: MultiViewAccuracy | None = None
        self.test_prefix = "test"
        self.unreadable: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}  # this process's

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        video, labels = batch["video"], batch["label"]
        if self.mixup is not None:
            video, target = self.mixup(video, labels)
        else:
            target = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        logits = self.net(video)  # (B, K)
        loss = soft_target_cross_entropy(logits, target)
        self.train_top1(logits, labels)
        # sync_dist: the logged loss is the global batch's (mean over ranks), comparable across world sizes
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True, batch_size=len(labels))
        self.unreadable["train"].update(batch.get("unreadable", ()))
        return loss

    def on_train_epoch_end(self) -> None:
        # distinct files over the epoch and every process (a file failing twice, or in two workers, counts once)
        self.log("train/skipped_videos", float(self._report_unreadable("train", "train")), sync_dist=True)

    def _views_metric(self, loader: Any) -> MultiViewAccuracy:
        dataset = loader.dataset
        views = getattr(dataset, "num_clips", 1) * getattr(dataset, "num_crops", 1)
        return MultiViewAccuracy(len(dataset) // views, self.num_classes, views).to(self.device)

    def _score(self, metric: MultiViewAccuracy, batch: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of the readable videos of a batch (the others are counted, not scored)."""
        self.unreadable[split].update(batch.get("unreadable", ()))
        logits = self.net(batch["video"])  # (B, K)
        valid = batch["valid"] if "valid" in batch else torch.ones_like(batch["label"], dtype=torch.bool)
        logits, labels = logits[valid], batch["label"][valid]
        view = batch["view"] if "view" in batch else torch.zeros_like(batch["video_index"])  # one view per video
        metric.update(logits, labels, batch["video_index"][valid], view[valid])
        return logits, labels

    def _log_views(self, metric: MultiViewAccuracy, split: str, prefix: str) -> None:
        """``prefix/top1``, ``/top5``, ``/videos`` (how many videos they cover) and ``/unreadable_videos``."""
        # already global (the metric and the names are gathered from every process): sync_dist averages equal values
        for name, value in metric.compute().items():
            self.log(f"{prefix}/{name}", value, prog_bar=name == "top1", sync_dist=True)
        self.log(f"{prefix}/unreadable_videos", float(self._report_unreadable(split, prefix)), sync_dist=True)
        metric.reset()

    def _report_unreadable(self, split: str, prefix: str) -> int:
        """How many distinct files could not be read in ``split`` this epoch, on all processes; rank 0 names them."""
        names = gather_names(self.unreadable[split])
        self.unreadable[split] = set()
        if names and self.trainer.is_global_zero:
            log.warning("%s: %d unreadable video(s), not %s: %s", prefix, len(names),
                        "trained on (replaced)" if split == "train" else "scored", ", ".join(sorted(names)))  # fmt: skip
        return len(names)

    def on_validation_epoch_start(self) -> None:
        self.val_views = self._views_metric(self.trainer.val_dataloaders)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, labels = self._score(self.val_views, batch, "val")
        # a sum over the readable clips, weighted by their number (a batch with none adds nothing)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum") / max(len(labels), 1)
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_views(self.val_views, "val", "val")

    def on_test_epoch_start(self) -> None:
        self.test_views = self._views_metric(self.trainer.test_dataloaders)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._score(self.test_views, batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_views(self.test_views, "test", self.test_prefix)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimizers(
            self.net, self.optimizer_factory, self.scheduler_factory, self.trainer.max_epochs or 1,
            self.trainer.estimated_stepping_batches, self.layer_decay,
        )  # fmt: skip

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mvit_video"] = checkpoint_metadata(self.net, self.trainer)


def checkpoint_metadata(net: nn.Module, trainer: L.Trainer | None) -> dict[str, Any]:
    """What a user needs to run a trained model: the (backbone's) preset and config, and the datamodule's
    preprocessing (frames, sampling rate, crop, mean/std, class or action names, test views)."""
    model = getattr(net, "backbone", net)  # a detector's config is its backbone's
    meta: dict[str, Any] = {"model": getattr(model, "cfg", None) and model.cfg.to_dict()}
    meta["preset"] = getattr(model, "preset", None)
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and hasattr(datamodule, "metadata"):
        meta.update(datamodule.metadata())
    return meta
