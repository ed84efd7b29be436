"""Multi-label video classification (Charades): sigmoid / binary cross-entropy on 0/1 targets, and mAP of the
maximum over the test views (SlowFast's ``MODEL.LOSS_FUNC: bce_logit``, ``HEAD_ACT: sigmoid``,
``DATA.ENSEMBLE_METHOD: max``). Everything else (optimiser, layer decay, checkpoints, unreadable videos, the
time-shuffle control) is ``VideoClassificationModule``'s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.charades import CharadesMAP
from .classification import TEST_PREFIXES, VideoClassificationModule


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on logits, in fp32 (bf16 logits would round the loss), mean over batch and classes as
    SlowFast's ``bce_logit``."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction=reduction)


class MultiLabelVideoModule(VideoClassificationModule):
    """``batch["label"]`` is a ``(B, K)`` 0/1 target. Logs ``train/loss``, ``val/loss``, and ``{val,test}/mAP`` with
    ``/videos`` and ``/classes`` (``metrics.charades.CharadesMAP``). Mixup is refused: the official multi-label
    recipes have none (and it is defined on class indices here)."""

    def __init__(
        self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer], num_classes: int = 157, **kwargs: Any
    ) -> None:
        if kwargs.get("mixup") is not None:
            raise ValueError("mixup is not supported for multi-label training: set task.mixup=null")
        kwargs.setdefault("label_smoothing", 0.0)
        super().__init__(net, optimizer, num_classes=num_classes, **kwargs)
        self.val_views = CharadesMAP(num_classes)
        # Not ``test_views``: callbacks read that as the single-label rows of ``MultiViewAccuracy``. The end-of-test
        # reports find the per-class AP under ``test_map.per_class_ap`` instead.
        self.test_views = nn.ModuleList()
        self.test_maps = nn.ModuleList(CharadesMAP(num_classes) for _ in TEST_PREFIXES)  # one per test loader

    @property
    def test_map(self) -> CharadesMAP:
        return self.test_maps[0]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        target = batch["label"].float()  # (B, K)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
        logits = (self.net_fn or self.net)(batch["video"])  # (B, K)
        loss = bce_with_logits(logits, target)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(target), sync_dist=True)
        self.unreadable["train"].update(batch.get("unreadable", ()))
        return loss

    def _score(self, metric: CharadesMAP, batch: dict[str, Any], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of the readable videos (for the loss). The metric also gets the unreadable ones, scored
        ``-inf`` for every class, as the official evaluator scores a video missing from the submission: ranked last,
        their positives still count (so an unreadable test set cannot raise the mAP)."""
        self.unreadable[prefix].update(batch.get("unreadable", ()))
        logits = (self.net_fn or self.net)(batch["video"])  # (B, K)
        labels = batch["label"]  # (B, K)
        valid = batch["valid"] if "valid" in batch else torch.ones(len(labels), dtype=torch.bool, device=labels.device)
        view = batch["view"] if "view" in batch else torch.zeros_like(batch["video_index"])  # one view per video
        scores = logits.detach().float().masked_fill(~valid[:, None], -torch.inf)  # (B, K)
        metric.update(scores, labels, batch["video_index"], view)
        return logits[valid], labels[valid]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, labels = self._score(self.val_views, batch, "val")
        loss = bce_with_logits(logits, labels, reduction="sum") / max(labels.numel(), 1)  # a batch with none adds 0
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels), sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._score(self.test_maps[dataloader_idx], batch, TEST_PREFIXES[dataloader_idx])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The metadata says the model is multi-label, so ``mvit_video.load`` scores it as trained and tested
        (sigmoid, the maximum over the views: ``inference.view_scores``), not with a softmax."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["mvit_video"]["multilabel"] = True

    def on_test_epoch_end(self) -> None:
        for metric, prefix in zip(self.test_maps, TEST_PREFIXES):
            if prefix == "test" or metric.update_called:  # the loaders this test ran (the control is optional)
                self._log_views(metric, prefix)
