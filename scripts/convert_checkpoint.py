#!/usr/bin/env python
"""Convert a torchvision, official SlowFast (.pyth), official mvit image (.pyth), timm or mvit_video checkpoint
into our format and report keys and shapes (the source is detected unless --source names it). Files are read
with ``torch.load(weights_only=True)``: a checkpoint cannot run code.

    python scripts/convert_checkpoint.py MViTv2_S_16x4_k400_f302660347.pyth --model mvitv2_s_16x4 --out s16.pt

--to-hub DIR also writes the Hugging Face layout (``model.safetensors``, ``config.json``, ``README.md``;
``mvit_video.from_pretrained(DIR)`` loads it); the key table is printed and ``--out`` written as without it,
and either or both may be given. Preprocessing from our checkpoint's metadata, else from the
preset's official recipe (``--sampling-rate``, ``--mean``, ``--std``, ``--class-names`` override it).

    python scripts/convert_checkpoint.py MViTv2_S_16x4_k400_f302660347.pyth --model mvitv2_s_16x4 --to-hub s16/
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    import torch

    from mvit_video.models import build_model, list_models  # the presets name --model's choices
    from mvit_video.models.convert import (
        SOURCES,
        CheckpointMismatchError,
        CheckpointReadError,
        convert_state_dict,
        guess_source,
        load_file,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--model", required=True, choices=list_models())
    parser.add_argument("--source", default="auto", choices=["auto", *SOURCES])
    parser.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's head size")
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--out", default=None, help="write {'state_dict', 'mvit_video'} here")
    parser.add_argument("--to-hub", default=None, metavar="DIR", help="write model.safetensors, config.json, README.md")
    parser.add_argument("--class-names", default=None, help="--to-hub: a file of one class name per line")
    parser.add_argument("--sampling-rate", type=int, default=None, help="--to-hub: default the preset's recipe's")
    parser.add_argument("--mean", type=float, nargs=3, default=None, help="--to-hub: default the preset's recipe's")
    parser.add_argument("--std", type=float, nargs=3, default=None, help="--to-hub: default the preset's recipe's")
    args = parser.parse_args(argv)

    try:
        obj = load_file(args.checkpoint)  # its errors name the file
    except (FileNotFoundError, CheckpointReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    source = guess_source(obj) if args.source == "auto" else args.source
    try:
        raw = convert_state_dict(obj, source)  # renamed, not yet checked
    except CheckpointReadError as e:  # readable, but no weights in it
        print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    head = raw.get("head.projection.weight")
    overrides = {k: v for k, v in dict(num_frames=args.num_frames, input_size=args.input_size).items() if v}
    num_classes = args.num_classes or (head.shape[0] if head is not None else 400)
    with torch.device("meta"):
        model = build_model(args.model, num_classes=num_classes, **overrides)
    target = model.state_dict()
    print(f"source: {source}; {len(raw)} tensors in the checkpoint, {len(target)} in {args.model}")
    print(f"{'key':<40}{'checkpoint':>22}{'model':>22}")
    for key, t in target.items():
        got = tuple(raw[key].shape) if key in raw else "missing"
        mark = "" if key in raw and raw[key].shape == t.shape else ("  (resized)" if "rel_pos" in key else "  <--")
        print(f"{key:<40}{str(got):>22}{str(tuple(t.shape)):>22}{mark}")
    try:
        sd = convert_state_dict(obj, source, model)
    except CheckpointMismatchError as e:
        print(e, file=sys.stderr)
        return 1
    print("all keys and shapes match")
    model.load_state_dict(sd, assign=True)  # the converted tensors themselves into the meta model: no random init
    if args.out:
        meta = {"preset": args.model, "model": model.cfg.to_dict(), "source": source}
        torch.save({"state_dict": {f"net.{k}": v for k, v in sd.items()}, "mvit_video": meta}, args.out)
        print(f"wrote {args.out}")
    if args.to_hub:
        return _to_hub(args, obj, source, model)
    return 0


def _to_hub(args: argparse.Namespace, obj: Any, source: str, model: Any) -> int:
    """The converted ``model`` (weights loaded) in the ``save_pretrained`` layout, with the preprocessing it expects."""
    from mvit_video.data.annotations import DatasetFormatError, read_classnames
    from mvit_video.hub import save_pretrained
    from mvit_video.inference import Preprocessing

    num_classes = model.cfg.num_classes
    meta = obj.get("mvit_video") if isinstance(obj, dict) else None
    if meta and meta.get("class_names"):  # our checkpoint: the preprocessing it was trained with
        pre = Preprocessing.from_metadata(meta)
    else:
        try:
            names = read_classnames(args.class_names, num_classes) if args.class_names else None
        except DatasetFormatError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if names is None:
            print(f"note: no --class-names: the {num_classes} classes are named class_0 ...", file=sys.stderr)
        recipe = recipe_preprocessing(args.model, model.cfg)
        pre = Preprocessing(
            num_frames=model.cfg.num_frames,
            sampling_rate=args.sampling_rate or recipe["sampling_rate"],
            crop_size=model.cfg.input_size,
            mean=tuple(args.mean or recipe["mean"]),
            std=tuple(args.std or recipe["std"]),
            class_names=tuple(names or (f"class_{i}" for i in range(num_classes))),
        )
    out = save_pretrained(model, args.to_hub, pre, source_checkpoint=str(args.checkpoint), source=source)
    print(f"wrote {out}/model.safetensors, config.json, README.md")
    return 0


def recipe_preprocessing(preset: str, cfg: Any) -> dict[str, Any]:
    """Sampling rate and mean/std of the preset's official recipe (``mvit_video.recipes``): video models the
    K400 configs' (S 16x4, B 32x3, L 40x3), image models ImageNet's; other presets the video default."""
    from mvit_video import recipes

    if not cfg.video:
        return {"sampling_rate": 1, "mean": recipes.IMAGENET_MEAN, "std": recipes.IMAGENET_STD}
    base = {"data.sampling_rate": 4, "data.mean": recipes.KINETICS_MEAN, "data.std": recipes.KINETICS_STD}
    for clip in (recipes.S16, recipes.B32, recipes.L40):
        if clip["model.name"] == preset.removesuffix("_in1k"):
            base.update(clip)
    return {"sampling_rate": base["data.sampling_rate"], "mean": base["data.mean"], "std": base["data.std"]}


if __name__ == "__main__":
    sys.exit(main())
