"""LightningModule for AVA action detection: BCE on the ROI head's logits, frame-mAP on validation and test, and the
detections written in the official CSV format (``video_id,second,x1,y1,x2,y2,action_id,score``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ..data.sampling import gather_lists
from ..metrics.ava import AVAFrameMAP
from ..metrics.ava_frame_map import BOX_DECIMALS, SCORE_DECIMALS, DetectionRow, csv_round, detection_csv_lines, keyframe_code
from .classification import checkpoint_metadata, compiled
from .optim import configure_optimizers


def gather_detections(rows: list[DetectionRow]) -> list[DetectionRow]:
    """Every process's rows, in rank order, each (video, second, box) once: the padding of a ``DistributedSampler``
    repeats keyframes on the last ranks. The first copy is kept, as ``AVAFrameMAP`` does, so the CSV gives the
    logged mAP."""
    rows = gather_lists(rows)
    seen: set[tuple[str, int, tuple[float, ...]]] = set()
    unique = []
    for row in rows:
        if row[:3] not in seen:
            seen.add(row[:3])
            unique.append(row)
    return unique


def detection_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE of sigmoid(logits) against multi-hot ``labels``, computed from logits in fp32: the official
    loss, but allowed under CUDA autocast (BCE on probabilities is not) and finite for saturated scores."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class AVADetectionModule(L.LightningModule):
    """Receives a built detector (``logits(video, boxes)`` for the loss, ``forward(video, boxes) -> probabilities``
    for the scores) and optimiser/scheduler factories.

    ``class_ids``: the evaluated action ids (``train.run`` gives the datamodule's label map, the official
    whitelist, when the config leaves them null). ``metadata``: the datamodule's preprocessing, written into every
    checkpoint. Evaluation batches carry ``video_ids`` (one per box) for the detections CSV. ``compile``: as
    ``VideoClassificationModule``'s; the boxes' count is marked dynamic, so a new number of boxes per batch reuses
    the graph (one more for a single box, which dynamo specialises).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        class_ids: list[int] | None = None,
        detections_dir: str | None = None,
        metadata: dict[str, Any] | None = None,
        compile: bool | dict[str, Any] = False,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        if grad_checkpointing:  # activation checkpointing in the backbone's blocks: the L detector at 40 x 312
            net.backbone.set_grad_checkpointing(True)
        self.logits_fn = compiled(net.logits, compile) or net.logits
        self.probs_fn = compiled(net.forward, compile)  # None: call the net itself
        self.dynamic_boxes = bool(compile)  # mark the box count dynamic (only then: it imports torch._dynamo)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.class_ids = list(class_ids) if class_ids else None
        self.detections_dir = detections_dir
        self.metadata = dict(metadata or {})
        self._rows: list[DetectionRow] = []

    def setup(self, stage: str) -> None:
        if self.class_ids is None:
            raise ValueError("AVADetectionModule needs class_ids (train.run passes the datamodule's class_names)")
        # Rounded as the CSV writes them, so the logged mAP is the official evaluator's on detections_<split>.csv.
        rounding = dict(score_decimals=SCORE_DECIMALS, box_decimals=BOX_DECIMALS)
        self.val_map = AVAFrameMAP(self.class_ids, **rounding)
        self.test_map = AVAFrameMAP(self.class_ids, **rounding)

    def forward(self, video: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.net(video, boxes)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint_metadata(self.net, self.metadata)
        meta["detector"] = {"num_classes": self.net.roi_head.projection.out_features}
        checkpoint["mvit_video"] = meta

    def _mark_boxes(self, batch: dict[str, Any]) -> None:
        """Compiled: K boxes, any K, one graph (``dynamic=False`` would compile one per K otherwise)."""
        if self.dynamic_boxes:
            torch._dynamo.maybe_mark_dynamic(batch["boxes"], 0)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self._mark_boxes(batch)
        logits = self.logits_fn(batch["video"], batch["boxes"])  # (K, 80), bf16 under autocast
        loss = detection_loss(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["video"]), sync_dist=True)
        return loss

    def _eval_step(self, batch: dict[str, Any], metric: AVAFrameMAP) -> None:
        self._mark_boxes(batch)
        probs = (self.probs_fn or self.net)(batch["video"], batch["boxes"]).float()
        dk, gk = batch["keys"], batch["gt_keys"]  # (K, 2), (G, 2): (video index, second)
        metric.update(
            keyframe_code(dk[:, 0], dk[:, 1]),
            batch["ori_boxes"],
            probs,
            keyframe_code(gk[:, 0], gk[:, 1]),
            batch["gt_boxes"],
            batch["gt_labels"] > 0.5,
        )
        if self.detections_dir is not None:
            scores = csv_round(probs[:, [c - 1 for c in self.class_ids]].cpu().double().numpy(), SCORE_DECIMALS)  # (K, C')
            boxes = csv_round(batch["ori_boxes"].cpu().double().numpy(), BOX_DECIMALS)  # (K, 4)
            seconds = batch["keys"][:, 1].tolist()  # (K,)
            for name, sec, box, p in zip(batch["video_ids"], seconds, boxes.tolist(), scores.tolist()):
                self._rows.append((name, sec, tuple(box), p))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_map)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_map)

    def _finish(self, split: str, metric: AVAFrameMAP) -> None:
        value = metric.compute()  # float64: the evaluator's number, not a float32 rounding of it (MPS has no float64)
        self.log(f"{split}/mAP", value.float() if self.device.type == "mps" else value, prog_bar=True)
        metric.reset()
        if self.detections_dir is not None:
            rows = gather_detections(self._rows)  # every process takes part, also one without rows
            if rows and self.trainer.is_global_zero:
                out = Path(self.detections_dir) / f"detections_{split}.csv"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text("\n".join(detection_csv_lines(rows, self.class_ids)) + "\n")
        self._rows = []

    def on_validation_epoch_end(self) -> None:
        self._finish("val", self.val_map)

    def on_test_epoch_end(self) -> None:
        self._finish("test", self.test_map)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimizers(
            self.net,
            self.optimizer_factory,
            self.scheduler_factory,
            self.trainer.max_epochs or 1,
            self.trainer.estimated_stepping_batches,
        )
