"""Optimiser parameter groups and the per-step warmup + cosine schedule (spec §1.10)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def param_groups(
    model: nn.Module, weight_decay: float | None, layer_decay: float = 1.0, num_layers: int | None = None
) -> list[dict]:
    """No decay for 1-D tensors, biases and ``model.no_weight_decay()``; optional layer-wise LR decay
    (layer 0 = patch embed / cls, ``blocks.i`` = i+1, the rest = depth+1; scale = decay^(depth+1-id)).
    ``weight_decay=None``: the decayed groups take the optimiser's own ``weight_decay`` (its one place)."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    depth = num_layers if num_layers is not None else len(getattr(model, "blocks", []))
    groups: dict[tuple[float | None, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if p.ndim <= 1 or name.endswith(".bias") or name in skip else weight_decay
        scale = 1.0
        if layer_decay != 1.0:
            if name.startswith(("patch_embed", "cls_token")):
                layer = 0
            elif name.startswith("blocks."):
                layer = int(name.split(".")[1]) + 1
            else:
                layer = depth + 1
            scale = layer_decay ** (depth + 1 - layer)
        groups.setdefault((wd, scale), []).append(p)
    out = [{"params": ps, "weight_decay": wd, "lr_scale": scale} for (wd, scale), ps in groups.items()]
    for g in out:
        if g["weight_decay"] is None:
            del g["weight_decay"]  # the optimiser fills in its default
    return out


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    max_epochs: float,
    warmup_epochs: float = 0.0,
    warmup_start_lr: float = 1e-6,
    end_lr: float = 1e-6,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from ``warmup_start_lr`` to each group's base LR, then cosine to ``end_lr``, updated every
    step (fractional epoch), as the official LR policy does. Every LR of a group (start, base, end) is scaled by its
    ``lr_scale`` (layer decay), so each group runs the same schedule times its scale: a low layer's LR rises in the
    warmup and falls after it, like the top one's."""
    base = [g["lr"] for g in optimizer.param_groups]
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    total, warm = max_epochs * steps_per_epoch, warmup_epochs * steps_per_epoch

    def factor(i: int) -> Callable[[int], float]:
        b, start, end = base[i], warmup_start_lr * scales[i], end_lr * scales[i]

        def f(step: int) -> float:
            if step < warm:
                lr = start + (b - start) * step / warm
            else:
                progress = min((step - warm) / max(total - warm, 1), 1.0)
                lr = end + (b - end) * (1 + math.cos(math.pi * progress)) / 2
            return lr / b if b > 0 else 0.0

        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i) for i in range(len(base))])


def configure_optimizers(
    net: nn.Module,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    scheduler_factory: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None,
    max_epochs: int,
    total_steps: int,
    layer_decay: float = 1.0,
) -> dict:
    """What a LightningModule's ``configure_optimizers`` returns: weight-decay groups (the decayed ones keep the
    optimiser's ``weight_decay``, the others get 0), layer-decayed LRs, and the scheduler stepped every optimiser
    step."""
    optimizer = optimizer_factory(param_groups(net, None, layer_decay))
    for g in optimizer.param_groups:
        g["lr"] = g["lr"] * g.get("lr_scale", 1.0)
    if scheduler_factory is None:
        return {"optimizer": optimizer}
    max_epochs = max(max_epochs, 1)
    steps_per_epoch = max(total_steps // max_epochs, 1)
    scheduler = scheduler_factory(optimizer, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


FREEZE_MODES = "none | backbone | last_N (N >= 0: the last N blocks, the final norm and the head train)"


def freeze(net: nn.Module, mode: str | int | None) -> list[nn.Module]:
    """Fine-tuning modes on an MViT classifier (``patch_embed``, ``cls_token``, ``blocks``, ``norm``, ``head``):
    ``none`` trains everything; ``backbone`` is a linear probe (only ``head``, the dropout and linear layer on the
    pooled final-norm feature, trains); ``last_N`` also trains the last N blocks and the final norm. Frozen
    parameters get ``requires_grad=False`` (the optimiser never sees them). Returns the frozen modules, which the
    task keeps in eval mode: MViT has no BatchNorm, so eval mode changes only drop path and dropout, and with them
    off a frozen part computes the same features in training as in evaluation."""
    mode = "none" if mode is None else str(mode)
    if mode == "none":
        return []
    blocks = getattr(net, "blocks", None)
    if blocks is None or not hasattr(net, "head"):
        raise ValueError(f"task.freeze={mode!r} needs an MViT classifier (blocks and head), got {type(net).__name__}")
    if mode == "backbone":
        trainable = 0
        keep_norm = False
    elif mode.startswith("last_") and mode[5:].isdigit() and int(mode[5:]) <= len(blocks):
        trainable = int(mode[5:])
        keep_norm = True
    else:
        raise ValueError(f"task.freeze={mode!r}: expected {FREEZE_MODES}; this model has {len(blocks)} blocks")
    frozen: list[nn.Module] = [net.patch_embed, *blocks[: len(blocks) - trainable]]
    if not keep_norm:
        frozen.append(net.norm)
    for module in frozen:
        module.requires_grad_(False)
    if getattr(net, "cls_token", None) is not None:
        net.cls_token.requires_grad_(False)
    return frozen


def balanced_class_weights(counts: list[int]) -> torch.Tensor:
    """``N / (K n_k)`` per class (scikit-learn's "balanced"): each class weighs as much in the loss as it would in a
    balanced set of the same size. A class without training videos is an error (its weight would be infinite)."""
    n = torch.tensor(counts, dtype=torch.float64)  # (K,)
    if (n <= 0).any():
        raise ValueError(f"class_weights=balanced: classes {torch.nonzero(n <= 0).flatten().tolist()} have no training videos")
    return (n.sum() / (len(counts) * n)).float()  # (K,)
