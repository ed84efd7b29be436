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

from ..data.clips import TIME_SHUFFLED
from ..metrics.classification import MultiViewAccuracy, gather_names
from .mixup import MixupCutmix, smooth_one_hot
from .optim import balanced_class_weights, configure_optimizers
from .optim import freeze as freeze_modules

log = logging.getLogger(__name__)

TEST_PREFIXES = ("test", TIME_SHUFFLED)  # what test loader i is logged as


COMPILE_DEFAULTS: dict[str, Any] = {"fullgraph": True, "dynamic": False}


def compiled(fn: Callable[..., Any], options: bool | dict[str, Any]) -> Callable[..., Any] | None:
    """``fn`` under ``torch.compile`` when ``options`` asks for it (``True``, or ``torch.compile`` keyword arguments
    over ``COMPILE_DEFAULTS``), else None: the caller then calls the module itself, so its hooks run.
    ``dynamic=False``: the token grids are Python ints, so each input shape (B, T, H, W) compiles once and is reused
    (a train crop and a last smaller batch: two graphs; up to ``torch._dynamo.config.recompile_limit``).
    ``fullgraph=True``: the models have no graph break; one would be an error, not a silent slowdown. A bound method
    is compiled, not the module: the state dict keeps its keys."""
    if not options:
        return None
    return torch.compile(fn, **(COMPILE_DEFAULTS | (options if isinstance(options, dict) else {})))


def soft_target_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """mean_b sum_k -y_bk log softmax(z)_bk (targets not renormalised, as the official loss). With class weights w:
    sum_bk -w_k y_bk log p_bk / sum_bk w_k y_bk, which for one-hot targets is ``F.cross_entropy(weight=w)``."""
    nll = -target * F.log_softmax(logits.float(), dim=-1)  # (B, K)
    if class_weights is None:
        return torch.sum(nll, dim=-1).mean()
    return (nll * class_weights).sum() / (target * class_weights).sum()


class VideoClassificationModule(L.LightningModule):
    """Receives a built ``net`` and optimiser/scheduler factories; never reads a config.

    ``optimizer``: ``partial(torch.optim.AdamW, lr=..., weight_decay=...)`` (weight decay is moved into param
    groups). ``scheduler``: ``partial(warmup_cosine, warmup_epochs=..., ...)``, called with the optimiser,
    steps per epoch and max epochs, stepped every optimiser step. ``metadata``: the datamodule's preprocessing
    (``datamodule.metadata()``), written into every checkpoint for ``inference.load``. ``compile``: run the net
    through ``torch.compile`` (``compiled``: ``True``, or ``torch.compile`` keyword arguments).

    Fine-tuning: ``freeze`` (``optim.freeze``: ``none``, ``backbone`` = linear probe, ``last_N``) freezes part of
    the net and keeps it in eval mode; ``class_weights`` (``balanced``: from ``metadata["train_class_counts"]``,
    which ``data=folder`` gives; or one weight per class) weights the training loss; ``reset_head`` draws a new
    classifier after ``init_from`` (a probe of a fine-tuned backbone must not start from its trained head).

    Test: the first test loader is logged as ``test/*``, a second one (the datamodule's time-shuffle control) as
    ``test_time_shuffled/*``.
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
        metadata: dict[str, Any] | None = None,
        compile: bool | dict[str, Any] = False,
        freeze: str | int | None = "none",
        class_weights: str | list[float] | None = None,
        reset_head: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "mixup", "metadata"], logger=False)
        self.net = net
        self.net_fn = compiled(net.forward, compile)  # the compiled net or None (not a submodule: no new keys)
        if grad_checkpointing:
            net.set_grad_checkpointing(True)
        if reset_head:
            net.reset_classifier(num_classes)
        self.frozen = freeze_modules(net, freeze)  # modules kept in eval mode (``train``)
        weights = self._class_weights(class_weights, num_classes, metadata or {})
        self.register_buffer("class_weights", weights, persistent=False)  # (K,) or None; not in checkpoints
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mixup = mixup
        self.layer_decay = layer_decay
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.metadata = dict(metadata or {})
        self.val_views = MultiViewAccuracy(num_classes)
        self.test_views = nn.ModuleList(MultiViewAccuracy(num_classes) for _ in TEST_PREFIXES)  # one per test loader
        self.unreadable: dict[str, set[str]] = {p: set() for p in ("train", "val", *TEST_PREFIXES)}  # this process's

    @staticmethod
    def _class_weights(spec: str | list[float] | None, num_classes: int, metadata: dict[str, Any]) -> torch.Tensor | None:
        if spec is None:
            return None
        if spec == "balanced":
            counts = metadata.get("train_class_counts")
            if counts is None:
                raise ValueError(
                    "task.class_weights=balanced needs the training split's class counts, which this datamodule does not "
                    "give (data=folder does); give task.class_weights=[w_0,...,w_K-1] instead"
                )
            weights = balanced_class_weights(counts)
        elif isinstance(spec, (list, tuple)):
            weights = torch.tensor([float(w) for w in spec])
        else:
            raise ValueError(f"task.class_weights={spec!r}: expected null, balanced or a list of {num_classes} weights")
        if weights.shape != (num_classes,) or not (weights > 0).all():
            raise ValueError(f"task.class_weights: need {num_classes} positive weights, got {weights.tolist()}")
        log.info("class weights in the training loss: %s", [round(w, 4) for w in weights.tolist()])
        return weights

    def train(self, mode: bool = True) -> VideoClassificationModule:
        """Lightning switches the module to train mode each epoch; the frozen parts stay in eval mode (no drop path,
        no dropout), so a linear probe trains on the features it is evaluated on."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        video, labels = batch["video"], batch["label"]
        if self.mixup is not None:
            video, target = self.mixup(video, labels)
        else:
            target = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        logits = (self.net_fn or self.net)(video)  # (B, K)
        loss = soft_target_cross_entropy(logits, target, self.class_weights)
        self.train_top1(logits, labels)
        # sync_dist: the logged loss is the global batch's (mean over ranks), comparable across world sizes
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True, batch_size=len(labels))
        self.unreadable["train"].update(batch.get("unreadable", ()))
        return loss

    def on_train_epoch_end(self) -> None:
        # distinct files over the epoch and every process (a file failing twice, or in two workers, counts once)
        self.log("train/skipped_videos", float(self._report_unreadable("train")), sync_dist=True)

    def _score(self, metric: MultiViewAccuracy, batch: dict[str, Any], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of the readable videos of a batch (the others are counted, not scored)."""
        self.unreadable[prefix].update(batch.get("unreadable", ()))
        logits = (self.net_fn or self.net)(batch["video"])  # (B, K)
        valid = batch["valid"] if "valid" in batch else torch.ones_like(batch["label"], dtype=torch.bool)
        logits, labels = logits[valid], batch["label"][valid]
        view = batch["view"] if "view" in batch else torch.zeros_like(batch["video_index"])  # one view per video
        metric.update(logits, labels, batch["video_index"][valid], view[valid])
        return logits, labels

    def _log_views(self, metric: MultiViewAccuracy, prefix: str) -> None:
        """``prefix/top1``, ``/top5``, ``/videos`` (how many videos they cover) and ``/unreadable_videos``."""
        # already global (the metric and the names are gathered from every process): sync_dist averages equal values
        for name, value in metric.compute().items():
            self.log(f"{prefix}/{name}", value, prog_bar=name == "top1", sync_dist=True, add_dataloader_idx=False)
        unreadable = float(self._report_unreadable(prefix))
        self.log(f"{prefix}/unreadable_videos", unreadable, sync_dist=True, add_dataloader_idx=False)
        metric.reset()

    def _report_unreadable(self, prefix: str) -> int:
        """How many distinct files could not be read in ``prefix``'s loader this epoch, on all processes; rank 0
        names them."""
        names = gather_names(self.unreadable[prefix])
        self.unreadable[prefix] = set()
        if names and self.trainer.is_global_zero:
            log.warning(
                "%s: %d unreadable video(s), not %s: %s",
                prefix,
                len(names),
                "trained on (replaced)" if prefix == "train" else "scored",
                ", ".join(sorted(names)),
            )
        return len(names)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits, labels = self._score(self.val_views, batch, "val")
        # a sum over the readable clips, weighted by their number (a batch with none adds nothing)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum") / max(len(labels), 1)
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_views(self.val_views, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._score(self.test_views[dataloader_idx], batch, TEST_PREFIXES[dataloader_idx])

    def on_test_epoch_end(self) -> None:
        for metric, prefix in zip(self.test_views, TEST_PREFIXES):
            if prefix == "test" or metric.update_called:  # the loaders this test ran (the control is optional)
                self._log_views(metric, prefix)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimizers(
            self.net,
            self.optimizer_factory,
            self.scheduler_factory,
            self.trainer.max_epochs or 1,
            self.trainer.estimated_stepping_batches,
            self.layer_decay,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mvit_video"] = checkpoint_metadata(self.net, self.metadata)


def checkpoint_metadata(net: nn.Module, metadata: dict[str, Any]) -> dict[str, Any]:
    """What a user needs to run a trained model: the (backbone's) preset and config, and the datamodule's
    preprocessing (frames, sampling rate, crop, mean/std, class or action names, test views)."""
    model = getattr(net, "backbone", net)  # a detector's config is its backbone's
    meta: dict[str, Any] = {"model": getattr(model, "cfg", None) and model.cfg.to_dict()}
    meta["preset"] = getattr(model, "preset", None)
    meta.update(metadata)
    return meta
