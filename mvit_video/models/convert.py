"""Checkpoint conversion: torchvision ``mvit_v2_s``, official PySlowFast ``.pyth``, official facebookresearch/mvit
image ``.pyth``, timm ``mvitv2_*`` and our own.

Our parameter names follow PySlowFast's, so a SlowFast state dict needs no renaming; the official image code
(``mvit/models/mvit_model.py``, ``attention.py``) uses the same names with 2-D convs, which the ``mvit`` source gives
a temporal axis of 1; torchvision's names are mapped with the table of spec §1.12, timm's image models by
``_timm_to_ours`` (per-stage blocks numbered globally, 2-D convs given a temporal axis of 1). Every conversion
checks keys and shapes against the target model before a single weight is copied (naming, when the two widen in
different places, the ``dim_mul_in_att`` the checkpoint needs), and resizes relative-position tables whose length
differs (as the official loader does), so a 16x224^2 checkpoint loads into a 32x256^2 model.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attention import resize_rel_pos

log = logging.getLogger(__name__)

SOURCES = ("torchvision", "slowfast", "mvit", "timm", "mvit_video")
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


def _with_temporal_axis(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """2-D conv kernels ``(C_out, C_in, kh, kw)`` (timm, the official image code) -> ours ``(C_out, C_in, 1, kh, kw)``."""
    return {k: v.unsqueeze(2) if CONV_KERNELS.match(k) and v.ndim == 4 else v for k, v in sd.items()}


def _timm_to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's ``stages.{s}.blocks.{j}`` become our global ``blocks.{i}`` (the stage depths read from the keys
    themselves), its skip projections ``proj``, its classifier ``head.projection`` (the inverse of timm's
    ``checkpoint_filter_fn``, which maps the official names to timm's). 2-D kernels are left to the caller."""
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
        out[_rename(key, _TIMM_TO_OURS)] = value
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
    size, for fine-tuning on a new label set). An image checkpoint for a video model is refused here: it needs
    ``inflate.inflate_image_state_dict`` (``load_pretrained(..., init_mode=center|repeat)``)."""
    sd = unwrap_checkpoint(state_dict, source)
    source = _ALIASES.get(source, source)
    if source == "torchvision":
        sd = {_rename(k, _TV_TO_OURS): v for k, v in sd.items()}
        if "cls_token" in sd and sd["cls_token"].ndim == 1:
            sd["cls_token"] = sd["cls_token"].reshape(1, 1, -1)  # (C,) -> (1, 1, C)
    elif source == "timm":
        sd = _with_temporal_axis(_timm_to_ours(sd))
    elif source == "mvit":
        sd = _with_temporal_axis(sd)  # the official image names are ours; its convs are 2-D
    if model is None:
        return sd
    target = model.state_dict()
    _refuse_image_for_video(sd, target)
    sd, _ = fit_to_model(sd, target, strict_head)
    check_fits(sd, model)
    return sd


def _refuse_image_for_video(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    """An image stem (temporal kernel 1) for a video stem (kt > 1): loading it needs a choice of inflation, made
    by the caller, never by default (``center`` and ``repeat`` train differently; the paper and PySlowFast differ)."""
    key = "patch_embed.proj.weight"
    if _has_image_stem(sd) and key in target and target[key].shape[2] > 1:
        raise CheckpointMismatchError(
            f"the checkpoint holds an image model ({key} {tuple(sd[key].shape)}, a 2-D kernel) and the model is a "
            f"video model ({tuple(target[key].shape)}): pass init_mode=center (the paper: the 2-D kernel in the centre "
            "temporal slice) or init_mode=repeat (PySlowFast: repeated over time) to inflate it: train.py "
            "init_from=FILE init_mode=center|repeat, or load_pretrained(model, FILE, init_mode=...)"
        )


@dataclass
class FitReport:
    """What :func:`fit_to_model` changed, for the inflation report."""

    resized: list[str] = field(default_factory=list)  # relative-position tables interpolated to the model's length
    kept: dict[str, str] = field(default_factory=dict)  # classifier keys left at the model's init -> why
    dropped: list[str] = field(default_factory=list)  # classifier keys a headless model has no place for


def fit_to_model(
    sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], strict_head: bool = True
) -> tuple[dict[str, torch.Tensor], FitReport]:
    """The one place where a checkpoint is fitted to a model of another grid or label set (convert_state_dict
    and the image -> video inflation both use it): relative-position tables of another length are resized (the
    official loader's linear interpolation); a headless model drops the classifier; with ``strict_head=False`` a
    classifier of another size is replaced by the model's own initialisation. Returns a new dict and what changed;
    anything else that does not fit is left for :func:`check_fits` to name."""
    sd, report = dict(sd), FitReport()
    for key, value in sd.items():
        if re.search(r"rel_pos_[hwt]$", key) and key in target and value.shape != target[key].shape:
            if value.shape[1:] == target[key].shape[1:]:  # another head dim: reported as a shape mismatch
                sd[key] = resize_rel_pos(value, target[key].shape[0])
                report.resized.append(key)
    if not any(k.startswith("head.") for k in target):
        # A headless target (a detector's backbone, num_classes=0) fine-tunes a classifier's features: the
        # classifier has nowhere to go, so it is dropped rather than reported as unexpected.
        report.dropped = [k for k in sd if k.startswith("head.")]
        if report.dropped:
            log.info("the model has no classifier head: dropping the checkpoint's %s", ", ".join(sorted(report.dropped)))
            sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    if not strict_head:
        for key in ("head.projection.weight", "head.projection.bias"):
            if key in sd and key in target and sd[key].shape != target[key].shape:
                report.kept[key] = f"checkpoint classifier {tuple(sd[key].shape)} vs model {tuple(target[key].shape)}"
                sd[key] = target[key]  # keep the model's freshly initialised classifier
    return sd, report


def widens_in_attention(sd: dict[str, torch.Tensor]) -> bool | None:
    """The layout of a state dict in our names (``MViTv2Config.dim_mul_in_att``), read from its shapes: a block
    with a skip projection ``proj`` (C -> 2C) widens inside attention when its ``qkv`` already gives 3 x 2C, in the
    MLP before the next stage when it gives 3 x C (spec §2.5). None: no block widens (or no such keys)."""
    for key, proj in sd.items():
        m = re.fullmatch(r"blocks\.(\d+)\.proj\.weight", key)
        qkv = sd.get(f"blocks.{m[1]}.attn.qkv.weight") if m else None
        if qkv is not None and proj.ndim == 2 and qkv.ndim == 2:
            return qkv.shape[0] == 3 * proj.shape[0]  # (3 * att_dim, dim) vs (dim_out, dim)
    return None


def _layout_hint(sd: dict[str, torch.Tensor], model: nn.Module) -> str:
    """Which ``dim_mul_in_att`` (and preset) the checkpoint needs, when it and the model widen in different places."""
    ours, theirs = widens_in_attention(sd), widens_in_attention(model.state_dict())
    if ours is None or theirs is None or ours == theirs:
        return ""
    where = {True: "inside attention", False: "in the MLP"}
    hint = (
        f"\n  layout: the checkpoint widens {where[ours]} at each stage change (dim_mul_in_att={ours}), the model "
        f"{where[theirs]} (dim_mul_in_att={theirs}): build the model with model.dim_mul_in_att={str(ours).lower()}"
        f" (train.py: +model.dim_mul_in_att={str(ours).lower()}; build_model(..., dim_mul_in_att={ours}))"
    )
    from .mvitv2 import LAYOUT_TWINS  # it imports the registry; this module stays importable alone

    twin = LAYOUT_TWINS.get(getattr(model, "preset", None) or "")
    return hint + (f", or use the preset model.name={twin}" if twin else "")


def check_fits(sd: dict[str, torch.Tensor], model: nn.Module) -> None:
    """:func:`check_state_dict` against ``model``, its message saying which ``dim_mul_in_att`` the checkpoint
    needs when the layouts differ (their shapes then differ in every transition block)."""
    try:
        check_state_dict(sd, model.state_dict())
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{e}{_layout_hint(sd, model)}") from None


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
            "written by torch.save (a train.py .ckpt, a converted .pt, a SlowFast or mvit .pyth, a timm or a torchvision .pth)"
        ) from e


def guess_source(obj: Any) -> str:
    """The source of a checkpoint file's content: ``model_state`` is an official file, the image code's (``mvit``)
    when its patch kernel is an image one, else PySlowFast's (a 3-D kernel of temporal size 3); ``state_dict`` ours;
    ``stages.*`` timm; ``conv_proj.*`` torchvision; a bare state dict with an image patch kernel the official image
    layout."""
    if isinstance(obj, dict) and "model_state" in obj:
        return "mvit" if _has_image_stem(obj["model_state"]) else "slowfast"
    if isinstance(obj, dict) and ("state_dict" in obj or "mvit_video" in obj):
        return "mvit_video"
    keys = list(obj.keys()) if isinstance(obj, dict) else []
    if any(k.startswith("stages.") for k in keys):
        return "timm"
    if any(k.startswith("conv_proj.") for k in keys):
        return "torchvision"
    return "mvit" if _has_image_stem(obj) else "slowfast"


def _has_image_stem(sd: Any) -> bool:
    """A 2-D patch kernel ``(C, 3, 7, 7)`` (``Conv2d`` in mvit_model.py), or 3-D of temporal size 1 (the official
    image test configs set CHECKPOINT_SQUEEZE_TEMPORAL, so a released file may store its convs that way)."""
    w = sd.get("patch_embed.proj.weight") if isinstance(sd, dict) else None
    return isinstance(w, torch.Tensor) and (w.ndim == 4 or (w.ndim == 5 and w.shape[2] == 1))


def load_pretrained(
    model: nn.Module, path: str | Path, source: str = "auto", strict_head: bool = True, init_mode: str | None = None
) -> nn.Module:
    """Load a checkpoint file of any supported source into ``model`` (shapes checked, tables resized).
    ``init_mode`` (``center`` or ``repeat``): the file holds an image model, inflated into the video ``model`` by
    ``inflate.inflate_image_state_dict``; its report (every tensor not copied) is logged, and a classifier of
    another size is left at init whatever ``strict_head`` says (an image head never fits a video task's). An image
    file for a video model without ``init_mode`` raises :class:`CheckpointMismatchError` asking for one."""
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
