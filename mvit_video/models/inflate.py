"""Image -> video initialisation: an image MViTv2's weights inflated into a video MViTv2 (issue 15, part 2).

Two ways, as the sources describe them:

- ``center`` (the paper, §4.3): a 2-D kernel goes to the centre temporal slice of the 3-D kernel and the other
  slices are zero, for the patch embedding and the pooling convs; the temporal relative-position table is zero.
  On a static clip the video model then computes, per frame, what the image model computes on that frame
  (without a class token and with equal KV strides; ``tests/test_inflate.py`` says why).
- ``repeat`` (PySlowFast ``load_checkpoint(..., image_init=True)``): 2-D kernels repeated over time *without*
  dividing by T, pooling kernels likewise; ``rel_pos_t`` (and a class token the image model lacks) stay at the
  video model's initialisation.

In both, spatial relative-position tables are resized to the video model's, every other tensor is copied bit for
bit, and every tensor not taken from the image is named in the report: nothing is left at init silently (unlike
PySlowFast's ``strict=False``, which leaves 2-D pooling convs of an official image file at random init).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .convert import CONV_KERNELS, CheckpointMismatchError, check_fits, fit_to_model

MODES = ("center", "repeat")


@dataclass
class InflationReport:
    """Where each tensor of the video state dict came from (keys in the video model's order)."""

    mode: str
    copied: list[str] = field(default_factory=list)  # bit for bit from the image
    inflated: list[str] = field(default_factory=list)  # a 2-D kernel given a temporal axis
    resized: list[str] = field(default_factory=list)  # a spatial rel-pos table interpolated to the video grid
    zeroed: list[str] = field(default_factory=list)  # set to zero by the mode (center: rel_pos_t)
    left_at_init: dict[str, str] = field(default_factory=dict)  # key -> why the video model's own value is kept
    dropped: list[str] = field(default_factory=list)  # image tensors with no place in the video model (a head)

    def summary(self) -> str:
        lines = [
            f"inflate ({self.mode}): {len(self.copied)} copied, {len(self.inflated)} inflated, {len(self.resized)} "
            f"resized, {len(self.zeroed)} zeroed, {len(self.left_at_init)} left at init, {len(self.dropped)} dropped"
        ]
        lines += [f"  left at init: {k} ({why})" for k, why in self.left_at_init.items()]
        lines += [f"  dropped: {k}" for k in self.dropped]
        return "\n".join(lines)


def _as_3d(weight: torch.Tensor) -> torch.Tensor:
    """A 2-D conv kernel ``(O, I, kh, kw)`` or a 3-D one of temporal size 1 -> ``(O, I, 1, kh, kw)``."""
    if weight.ndim == 4:
        return weight.unsqueeze(2)
    if weight.ndim == 5 and weight.shape[2] == 1:
        return weight
    raise ValueError(f"expected a 2-D kernel (temporal size 1), got shape {tuple(weight.shape)}")


def inflate_kernel(weight: torch.Tensor, kt: int, mode: str) -> torch.Tensor:
    """``(O, I, [1,] kh, kw)`` -> ``(O, I, kt, kh, kw)``: centre slice with zeros around it, or ``kt`` copies."""
    w = _as_3d(weight)  # (O, I, 1, kh, kw)
    if mode == "repeat":
        return w.repeat(1, 1, kt, 1, 1)  # (O, I, kt, kh, kw); not divided by kt, as PySlowFast
    out = w.new_zeros(w.shape[0], w.shape[1], kt, *w.shape[3:])  # (O, I, kt, kh, kw)
    out[:, :, kt // 2] = w[:, :, 0]
    return out


def inflate_image_state_dict(
    image_sd: dict[str, torch.Tensor], video_model: nn.Module, mode: str = "center"
) -> tuple[dict[str, torch.Tensor], InflationReport]:
    """Inflate ``image_sd`` (our key layout: an image preset's ``state_dict()`` or a converted official/timm file;
    2-D convs as 4-D or 3-D tensors of temporal size 1) into a full state dict for ``video_model``, which is not
    modified. Tables and the classifier are fitted by ``convert.fit_to_model`` (as for any checkpoint): a
    classifier of another size stays at the video model's init; any other key or shape that does not fit raises
    :class:`CheckpointMismatchError` naming every one (and the ``dim_mul_in_att`` the image needs)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    target = video_model.state_dict()
    report = InflationReport(mode)
    sd = dict(image_sd)
    for key, init in target.items():
        if key in sd:
            if CONV_KERNELS.match(key) and sd[key].shape != init.shape:
                sd[key] = inflate_kernel(sd[key], init.shape[2], mode).to(init.dtype)
                report.inflated.append(key)
        elif key.endswith(".attn.rel_pos_t") and mode == "center":
            sd[key] = torch.zeros_like(init)
            report.zeroed.append(key)
        elif key.endswith(".attn.rel_pos_t"):
            sd[key] = init.clone()
            report.left_at_init[key] = "the image model has no temporal table"
        elif key == "cls_token":
            sd[key] = init.clone()
            report.left_at_init[key] = "the image model has no class token"
        # any other missing key: named by check_fits below
    sd, fit = fit_to_model(sd, target, strict_head=False)
    report.resized, report.dropped = fit.resized, fit.dropped
    report.left_at_init.update({k: f"image classifier: {why}" for k, why in fit.kept.items()})
    try:
        check_fits(sd, video_model)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(
            f"image -> video: {e}\n  the image and the video model must share depths, widths, heads and where they "
            "widen (dim_mul_in_att: an image L widening in the MLP cannot init a video L widening in attention)"
        ) from None
    changed = {*report.inflated, *report.resized, *report.zeroed, *report.left_at_init}
    report.copied = [k for k in target if k not in changed]  # bit for bit from the image
    out = {k: sd[k] if k in changed else sd[k].clone() for k in target}  # model order; never the caller's tensors
    for key in report.left_at_init:
        out[key] = target[key].clone()
    return out, report
