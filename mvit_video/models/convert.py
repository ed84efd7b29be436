"""Checkpoint conversion: torchvision ``mvit_v2_s``, official PySlowFast ``.pyth``, timm ``mvitv2_*`` and our own.

Our parameter names follow PySlowFast's, so a SlowFast state dict needs no renaming; torchvision's names
are mapped with the table of spec §1.12, timm's image models by ``_timm_to_ours`` (per-stage blocks numbered
globally, 2-D convs given a temporal axis of 1). Every conversion checks keys and shapes against the target model
before a single weight is copied, and resizes relative-position tables whose length differs (as the
official loader does), so a 16x224^2 checkpoint loads into a 32x256^2 model.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attention import resize_rel_pos

log = logging.getLogger(__name__)

SOURCES = ("torchvision", "slowfast", "timm", "mvit_video")
_ALIASES = {"lightning": "mvit_video", "pyslowfast": "slowfast"}

# torchvision key pattern -> our key (spec §1.12); applied in order, first match wins.
_TV_TO_OURS: list[tuple[str, str]] = [
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^pos_encoding\.class_token$", "cls_token"),
    (r"^blocks\.(\d+)\.attn\.project\.0\.", r"blocks.\1.attn.proj."),
    (r"^blocks\.(\d+)\.attn\.pool_([qkv])\.pool\.", r"blocks.\1.attn.pool_\2."),
    (r"^blocks\.(\d+)\.attn\.pool_([qkv])\.norm_act\.0\.", r"blocks.\1.attn.norm_\2."),
    (r"^blocks\.(\d+)\.mlp\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^blocks\.(\d+)\.mlp\.3\.", r"blocks.\1.mlp.fc2."),
    (r"^blocks\.(\d+)\.project\.", r"blocks.\1.proj."),
    (r"^head\.1\.", "head.projection."),
]

# timm key pattern -> our key, after the blocks are renumbered; applied in order, first match wins.
_TIMM_TO_OURS: list[tuple[str, str]] = [
    (r"^(blocks\.\d+)\.shortcut_proj_(attn|mlp)\.", r"\1.proj."),  # one skip projection, wherever it widens
    (r"^head\.fc\.", "head.projection."),
]
# The convs an image model has in 2-D (timm, the official image files) and a video model in 3-D: the ones the timm
# source gives a temporal axis and inflate.py inflates.
CONV_KERNELS = re.compile(r"^(patch_embed\.proj|blocks\.\d+\.attn\.pool_[qkv])\.weight$")
# Our image presets and timm's models of the same architecture (tests/test_timm_parity.py, model_report.py --timm).
TIMM_MODELS = {
    "mvitv2_t": "mvitv2_tiny",
    "mvitv2_s": "mvitv2_small",
    "mvitv2_b": "mvitv2_base",
    "mvitv2_l": "mvitv2_large",
    "mvitv2_s_cls": "mvitv2_small_cls",
    "mvitv2_b_cls": "mvitv2_base_cls",
    "mvitv2_l_cls": "mvitv2_large_cls",
    "mvitv2_h_cls": "mvitv2_huge_cls",
}


def _timm_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's ``stages.{s}.blocks.{j}`` become our global ``blocks.{i}`` (the stage depths read from the keys
    themselves), its skip projections ``proj``, its classifier ``head.projection``; its 2-D conv kernels
    ``(C_out, C_in, kh, kw)`` gain our temporal axis ``(C_out, C_in, 1, kh, kw)``. Nothing else changes."""
    block = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")
    depths: dict[int, int] = {}
    for key in sd:
        m = block.match(key)
        if m:
            depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]) + 1)
    first = {s: sum(depths.get(i, 0) for i in range(s)) for s in depths}  # global index of each stage's block 0
    out = {}
    for key, value in sd.items():
        key = block.sub(lambda m: f"blocks.{first[int(m[1])] + int(m[2])}.", key)
        key = _rename(key, _TIMM_TO_OURS)
        if CONV_KERNELS.match(key) and value.ndim == 4:
            value = value.unsqueeze(2)  # (C_out, C_in, kh, kw) -> (C_out, C_in, 1, kh, kw)
        out[key] = value
    return out


class CheckpointMismatchError(ValueError):
    """Raised with the full list of missing, unexpected and mis-shaped keys."""


class CheckpointReadError(ValueError):
    """A file that is not a readable checkpoint (empty, truncated, not written by ``torch.save``, or holding no
    weights); the one-line message names the file."""


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, repl in table:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def _strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def unwrap_checkpoint(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Take the weights out of a checkpoint file's content (SlowFast: ``model_state``; Lightning:
    ``state_dict`` with the module's ``net.`` prefix; DDP's ``module.`` prefix dropped)."""
    source = _ALIASES.get(source, source)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if isinstance(obj, dict) and "model_state" in obj:
        obj = obj["model_state"]
    elif isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointReadError(f"no state dict of tensors found in this {source} checkpoint")
    sd = _strip_prefix(dict(obj), "module.")
    if source == "mvit_video":
        backbone = {k[len("net.") :]: v for k, v in sd.items() if k.startswith("net.")}
        sd = backbone or sd
        sd = {k[len("backbone.") :] if k.startswith("backbone.") else k: v for k, v in sd.items()}
    return sd


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], source: str, model: nn.Module | None = None, strict_head: bool = True
) -> dict[str, torch.Tensor]:
    """Map ``state_dict`` from ``source`` to our key names; with ``model``, also resize relative-position
    tables to the model's and check every key and shape (``strict_head=False`` drops a classifier of another
    size, for fine-tuning on a new label set)."""
    sd = unwrap_checkpoint(state_dict, source)
    source = _ALIASES.get(source, source)
    if source == "torchvision":
        sd = {_rename(k, _TV_TO_OURS): v for k, v in sd.items()}
        if "cls_token" in sd and sd["cls_token"].ndim == 1:
            sd["cls_token"] = sd["cls_token"].reshape(1, 1, -1)  # (C,) -> (1, 1, C)
    elif source == "timm":
        sd = _timm_to_ours(sd)
    if model is None:
        return sd
    target = model.state_dict()
    for key, value in list(sd.items()):
        if re.search(r"rel_pos_[hwt]$", key) and key in target and value.shape != target[key].shape:
            if value.shape[1] != target[key].shape[1]:
                continue  # another head dim: reported below as a shape mismatch
            sd[key] = resize_rel_pos(value, target[key].shape[0])
    if not any(k.startswith("head.") for k in target):
        # A headless target (a detector's backbone, num_classes=0) fine-tunes a classifier's features: the
        # classifier has nowhere to go, so it is dropped rather than reported as unexpected.
        dropped = sorted(k for k in sd if k.startswith("head."))
        if dropped:
            log.info("the model has no classifier head: dropping the checkpoint's %s", ", ".join(dropped))
            sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    if not strict_head:
        for key in ("head.projection.weight", "head.projection.bias"):
            if key in sd and key in target and sd[key].shape != target[key].shape:
                sd[key] = target[key]  # keep the model's freshly initialised classifier
    check_state_dict(sd, target)
    return sd


def check_state_dict(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointMismatchError` naming every key and shape that differs (model order)."""
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        lines = ["checkpoint does not fit the model:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else ""))
        raise CheckpointMismatchError("\n".join(lines))


def load_file(path: str | Path) -> Any:
    """Read a checkpoint without running code from it (``weights_only=True``). Anything torch cannot read
    raises :class:`CheckpointReadError` naming the file (torch's own errors name none: a bare ``EOFError``,
    a zip reader's message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointReadError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  torch raises EOFError, RuntimeError, UnpicklingError, ... by format
        text = " ".join(str(e).split())
        if "WeightsUnpickler error:" in text:  # torch's advice (weights_only=False) would run the file's code
            detail = text.split("WeightsUnpickler error:")[1].split(" Check the documentation")[0].strip()
            raise CheckpointReadError(
                f"{path}: not a PyTorch checkpoint, or one holding more than tensors and plain containers, which is "
                f"refused because loading it would run code (unpickler: {detail})"
            ) from e
        raise CheckpointReadError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {text[:200]}); expected a complete file "
            "written by torch.save (a train.py .ckpt, a converted .pt, a SlowFast .pyth, a timm or a torchvision .pth)"
        ) from e


def guess_source(obj: Any) -> str:
    if isinstance(obj, dict) and "model_state" in obj:
        return "slowfast"
    if isinstance(obj, dict) and ("state_dict" in obj or "mvit_video" in obj):
        return "mvit_video"
    keys = list(obj.keys()) if isinstance(obj, dict) else []
    if any(k.startswith("stages.") for k in keys):
        return "timm"
    return "torchvision" if any(k.startswith("conv_proj.") for k in keys) else "slowfast"


def load_pretrained(
    model: nn.Module, path: str | Path, source: str = "auto", strict_head: bool = True, init_mode: str | None = None
) -> nn.Module:
    """Load a checkpoint file of any supported source into ``model`` (shapes checked, tables resized).
    ``init_mode`` (``center`` or ``repeat``): the file holds an image model, inflated into the video ``model`` by
    ``inflate.inflate_image_state_dict``; its report (every tensor not copied) is logged."""
    obj = load_file(path)
    source = guess_source(obj) if source == "auto" else source
    try:
        if init_mode is None:
            sd = convert_state_dict(obj, source, model, strict_head=strict_head)
        else:
            from .inflate import inflate_image_state_dict  # it imports this module

            sd, report = inflate_image_state_dict(convert_state_dict(obj, source), model, init_mode)
            log.info("%s: %s", path, report.summary())
    except CheckpointReadError as e:
        raise CheckpointReadError(f"{path}: {e}") from e
    model.load_state_dict(sd, strict=True)
    return model


def timm_logit_diff(preset: str, seed: int = 0, batch: int = 2) -> float:
    """Max abs fp32 logit difference between timm's ``TIMM_MODELS[preset]`` with seeded random weights and our
    preset loaded from its state dict by the ``timm`` source (needs ``timm``, the dev extra)."""
    import timm

    from .registry import build_model

    torch.manual_seed(seed)
    ref = timm.create_model(TIMM_MODELS[preset], pretrained=False).eval()
    model = build_model(preset, num_classes=ref.num_classes).eval()
    model.load_state_dict(convert_state_dict(ref.state_dict(), "timm", model), strict=True)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed + 1))  # (B, C, H, W)
    with torch.no_grad():
        return (model(x) - ref(x)).abs().max().item()  # over (B, num_classes)
