"""Share a model the Hugging Face way: a directory (or Hub repository) with ``model.safetensors``, ``config.json``
and a ``README.md`` model card.

    mvit_video.save_pretrained(model, "mvitv2-s-k400")        # a VideoClassifier (mvit_video.load) or an MViTv2
    model = mvit_video.from_pretrained("mvitv2-s-k400")      # or "org/name" on the Hub
    model.predict("video.mp4")

``from_pretrained`` reads only ``model.safetensors`` (tensors, no code) and ``config.json``: whatever else a
directory or repository holds (a pickled ``.bin``, a ``.ckpt``) is neither downloaded nor opened.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FORMAT = "mvit_video"  # config.json's "library": what from_pretrained accepts
LICENCES = {  # source -> (Hub licence id, note): the weights' terms follow where they came from
    "slowfast": ("apache-2.0", "converted from PySlowFast's model zoo (facebookresearch/SlowFast, Apache-2.0)"),
    "mvit": ("apache-2.0", "converted from facebookresearch/mvit's model zoo (Apache-2.0)"),
    "torchvision": ("bsd-3-clause", "converted from torchvision's weights (BSD-3-Clause)"),
    "timm": ("apache-2.0", "converted from timm's weights (Apache-2.0)"),
    "mvit_video": ("other", "trained with mvit_video; the training data's terms apply"),
}
DATA_NOTE = "Kinetics, SSv2, AVA and ImageNet are for research use under their own terms."


class PretrainedFormatError(ValueError):
    """A directory or Hub id without the ``save_pretrained`` layout, or one that cannot be fetched."""


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    preprocessing: Any = None,
    source_checkpoint: str | None = None,
    source: str = "mvit_video",
    license: str | None = None,
    notes: str = "",
) -> Path:
    """Write ``model.safetensors``, ``config.json`` (preset, model config, preprocessing, class names, source
    checkpoint and its licence note) and a ``README.md`` model card into ``directory``. ``model``: a
    ``VideoClassifier`` (its preprocessing is used) or a bare registered model with ``preprocessing`` given (an
    ``inference.Preprocessing``) or none. ``source``: where the weights came from (``convert.SOURCES``)."""
    from safetensors.torch import save_file

    net = getattr(model, "model", model)
    preprocessing = preprocessing if preprocessing is not None else getattr(model, "preprocessing", None)
    preset, cfg = getattr(net, "preset", None), getattr(net, "cfg", None)
    if preset is None or cfg is None:
        raise PretrainedFormatError("save_pretrained needs a model from mvit_video.models.build_model (preset and config)")
    licence_id, licence_note = LICENCES.get(source, ("other", f"from {source}"))
    licence_id = license or licence_id
    config = {
        "library": FORMAT,
        "preset": preset,
        "model": cfg.to_dict(),
        "preprocessing": asdict(preprocessing) if preprocessing is not None else None,
        "source": {"checkpoint": source_checkpoint, "format": source, "license": licence_id, "note": licence_note},
    }
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}  # safetensors: no shared views
    save_file(state, out / WEIGHTS_NAME, metadata={"format": "pt", "preset": preset})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (out / CARD_NAME).write_text(model_card(config, notes))
    return out


def model_card(config: dict[str, Any], notes: str = "") -> str:
    """A Hub model card: YAML front matter (library, tags, licence) and how to use the model."""
    pre, src = config["preprocessing"], config["source"]
    classes = len(pre["class_names"]) if pre else config["model"]["num_classes"]
    lines = [
        "---",
        f"library_name: {FORMAT}",
        f"license: {src['license']}",
        "pipeline_tag: video-classification" if config["model"]["video"] else "pipeline_tag: image-classification",
        "tags:",
        "- mvitv2",
        f"- {config['preset']}",
        "- video-classification" if config["model"]["video"] else "- image-classification",
        "---",
        "",
        f"# {config['preset']} ({classes} classes)",
        "",
        "MViTv2 (Li et al., CVPR 2022) in mvit_video's layout: `model.safetensors` (weights, no code) and `config.json`"
        " (model config and preprocessing).",
        "",
        "```python",
        "import mvit_video",
        'model = mvit_video.from_pretrained("<this directory or org/name>")',
        'model.predict("video.mp4", topk=5)',
        "```",
        "",
    ]
    if pre:
        lines += [
            f"Preprocessing: {pre['num_frames']} frames, sampling rate {pre['sampling_rate']} at {pre['target_fps']} fps, "
            f"{pre['crop_size']}px crop, mean {list(pre['mean'])}, std {list(pre['std'])}; test views "
            f"{pre['test_num_clips']} clips x {pre['test_num_crops']} crops.",
            "",
        ]
    lines += [f"Source: {src['checkpoint'] or 'mvit_video'}. Licence: {src['license']}: {src['note']}. {DATA_NOTE}", ""]
    if notes:
        lines += [notes, ""]
    return "\n".join(lines)


def _resolve(name_or_dir: str | Path, revision: str | None) -> Path:
    """A local directory as it is; else a Hub id, downloaded (only the weights, config and card)."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    name = str(name_or_dir)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/")):
        raise PretrainedFormatError(f"{name}: not a directory, and not a Hugging Face Hub id (org/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ImportError("from_pretrained of a Hub id needs huggingface_hub: pip install huggingface_hub") from err
    try:
        local = snapshot_download(name, revision=revision, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME])
    except Exception as err:  # noqa: BLE001  offline, unknown repository, no network: one message with the cause
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        hint = " HF_HUB_OFFLINE is set: only a cached download or a local directory can be used." if offline else ""
        raise PretrainedFormatError(f"{name}: could not fetch from the Hugging Face Hub ({type(err).__name__}).{hint}") from err
    return Path(local)


def from_pretrained(
    name_or_dir: str | Path, revision: str | None = None, map_location: str = "cpu", preset: str | None = None
) -> nn.Module:
    """The model saved by ``save_pretrained`` in a directory or Hub repository ``org/name``, in eval mode: a
    ``VideoClassifier`` (``predict``, ``preprocessing``) when the config has preprocessing, else the bare model.
    Reads ``config.json`` and ``model.safetensors`` only (no pickle: nothing in the files can run). ``preset``:
    refuse another model (``hubconf.py``'s entries)."""
    from safetensors.torch import load_file

    from .inference import Preprocessing, VideoClassifier

    root = _resolve(name_or_dir, revision)
    weights, config_path = root / WEIGHTS_NAME, root / CONFIG_NAME
    if not weights.is_file() or not config_path.is_file():
        raise PretrainedFormatError(
            f"{root}: needs {WEIGHTS_NAME} and {CONFIG_NAME} (written by mvit_video.save_pretrained or "
            "scripts/convert_checkpoint.py --to-hub); other weight files (.bin, .ckpt, .pth) are never loaded here"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise PretrainedFormatError(f"{config_path}: line {err.lineno}: not JSON ({err.msg})") from err
    if config.get("library") != FORMAT or "preset" not in config:
        raise PretrainedFormatError(f"{config_path}: not an mvit_video config (library: {config.get('library')!r})")
    if preset is not None and config["preset"] != preset:
        raise PretrainedFormatError(f"{root} holds {config['preset']}, not {preset}: load it with {config['preset']!r}")
    model = build_empty(config["preset"], **(config.get("model") or {}))
    model.load_state_dict(load_file(weights, device=map_location), assign=True)  # strict: every key and shape
    if not config.get("preprocessing"):
        return model.eval()
    return VideoClassifier(model, Preprocessing.from_metadata(config["preprocessing"]))


def load_preset(preset: str, weights: str | Path | None = None, **overrides: Any) -> nn.Module:
    """A registered model with ``weights`` (``hubconf.py``'s entries): none (random init, ``overrides`` as
    ``build_model``'s), a ``save_pretrained`` directory or Hub id, a ``.safetensors`` state dict, one of our
    ``.ckpt`` files (a ``VideoClassifier`` with its preprocessing), or an official / torchvision / timm checkpoint
    (``convert.load_pretrained``; the head sized by the file unless ``num_classes`` is given)."""
    from .models import build_model
    from .models.convert import convert_state_dict, guess_source, load_file

    if weights is None:
        return build_model(preset, **overrides)
    path = Path(weights)
    if path.is_dir() or (not path.exists() and str(weights).count("/") == 1 and path.suffix == ""):
        return from_pretrained(weights, preset=preset)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        state = load_safetensors(path)
        meta_preset = _safetensors_preset(path)
        if meta_preset not in (None, preset):
            raise PretrainedFormatError(f"{path} holds {meta_preset}, not {preset}: load it with {meta_preset!r}")
        guessed = guess_source(state)  # a bare state dict: timm's stages.*, torchvision's conv_proj.*, else ours
        source = guessed if guessed in ("timm", "torchvision") else "mvit_video"
    else:
        state = load_file(path)  # torch.load(weights_only=True): no code runs; errors name the file
        source = guess_source(state)
        meta = state.get("mvit_video") if isinstance(state, dict) else None
        if meta and meta.get("preset") not in (None, preset):
            raise PretrainedFormatError(f"{path} holds {meta['preset']}, not {preset}: load it with {meta['preset']!r}")
        if source == "mvit_video" and meta and meta.get("class_names") and not overrides:
            from .inference import classifier_from_checkpoint

            return classifier_from_checkpoint(meta, state)  # our checkpoint: its preset's config and preprocessing
    raw = convert_state_dict(state, source)  # renamed, not yet checked
    head = raw.get("head.projection.weight")
    if head is not None and "num_classes" not in overrides:
        overrides["num_classes"] = head.shape[0]
    model = build_empty(preset, **overrides)
    model.load_state_dict(convert_state_dict(state, source, model), assign=True)  # keys and shapes checked
    return model.eval()


def _safetensors_preset(path: Path) -> str | None:
    """The ``preset`` that ``save_pretrained`` writes into a safetensors file's metadata (none in other files)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("preset")


def build_empty(preset: str, **overrides: Any) -> nn.Module:
    """The model without its random init (on the meta device): every tensor comes from the loaded state dict
    (``load_state_dict(assign=True)``, strict, so none is left empty; the models have no unsaved buffers)."""
    from .models import build_model

    with torch.device("meta"):
        return build_model(preset, **overrides)
