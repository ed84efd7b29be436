#!/usr/bin/env python
"""Convert a torchvision, official SlowFast (.pyth), official mvit image (.pyth), timm or mvit_video checkpoint
into our format and report keys and shapes (the source is detected unless --source names it). Files are read
with ``torch.load(weights_only=True)``: a checkpoint cannot run code.

    python scripts/convert_checkpoint.py MViTv2_S_16x4_k400_f302660347.pyth --model mvitv2_s_16x4 --out s16.pt
"""

from __future__ import annotations

import argparse
import sys


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
    if args.out:
        meta = {"preset": args.model, "model": model.cfg.to_dict(), "source": source}
        torch.save({"state_dict": {f"net.{k}": v for k, v in sd.items()}, "mvit_video": meta}, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
