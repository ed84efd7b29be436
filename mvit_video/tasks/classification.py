"""LightningModule for video classification: soft-target CE, mixup/cutmix, multi-view test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..metrics.classification import MultiViewAccuracy
from .mixup import MixupCutmix, smooth_one_hot
from .optim import configure_optimizers


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
        top5 = min(5, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_views: MultiViewAccuracy | None = None
        self.test_prefix = "test"

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
        skipped = batch["skipped"].sum().float() if "skipped" in batch else torch.zeros((), device=self.device)
        self.log("train/skipped_videos", skipped, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        labels = batch["label"]
        logits = self.net(batch["video"])
        loss = F.cross_entropy(logits.float(), labels)
        self.val_top1(logits, labels)
        self.val_top5(logits, labels)
        kw = dict(on_step=False, on_epoch=True, batch_size=len(labels))
        self.log("val/loss", loss, sync_dist=True, **kw)
        self.log("val/top1", self.val_top1, prog_bar=True, **kw)
        self.log("val/top5", self.val_top5, **kw)

    def on_test_epoch_start(self) -> None:
        dataset = self.trainer.test_dataloaders.dataset
        self.test_views = MultiViewAccuracy(len(dataset.items), self.num_classes).to(self.device)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.net(batch["video"])
        self.test_views.update(logits, batch["label"], batch["video_index"])

    def on_test_epoch_end(self) -> None:
        for name, value in self.test_views.compute().items():
            self.log(f"{self.test_prefix}/{name}", value)
        self.test_views.reset()

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
