#!/usr/bin/env python
"""Classify a video with a trained checkpoint: prints the top-k class names and probabilities.

    python scripts/predict.py VIDEO --ckpt CKPT [--topk 5] [--clips N --crops M] [--class-names FILE]
    python scripts/predict.py VIDEO --ckpt CKPT --window 2.0 --stride 1.0 [--batch-size 8] [--out DIR]

The views (clips x crops) default to the checkpoint's test protocol; their softmax scores are averaged (a multi-label
checkpoint, e.g. Charades: the sigmoid of each view, the maximum over the views, as it was tested).
With --window, a timeline: every window [s, s + window) for s = 0, stride, ... is read as the file cut there would
be (mvit_video.timeline says how its frames are picked), decoded in one streaming pass, batched; it writes
DIR/<video name>.timeline.{csv,json,png} (start, end, top-k classes and probabilities; the PNG: probability over time).
"""

from __future__ import annotations

import argparse
import sys

from mvit_video.cli import positive_float, positive_int


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="any video file PyAV can read")
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--topk", type=positive_int, default=5)
    parser.add_argument("--clips", type=positive_int, default=None, help="temporal clips (default: the checkpoint's test views)")
    parser.add_argument("--crops", type=int, choices=(1, 3), default=None, help="spatial crops, 1 or 3")
    parser.add_argument("--class-names", default=None, help="one class name per line, replacing the checkpoint's")
    parser.add_argument(
        "--window", type=positive_float, default=None, help="seconds per window: a timeline instead of one answer"
    )
    parser.add_argument("--stride", type=positive_float, default=None, help="seconds between window starts (default: --window)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    parser.add_argument("--out", default=".", help="folder for the timeline files (default: here)")
    args = parser.parse_args(argv)
    if args.window is None and args.stride is not None:
        parser.error("--stride needs --window")
    from mvit_video.data.annotations import DatasetFormatError
    from mvit_video.inference import CheckpointMetadataError, VideoReadError, load  # torch: after the arguments
    from mvit_video.models.convert import CheckpointReadError

    try:
        model = load(args.ckpt, class_names=args.class_names)
        if args.window is not None:
            return timeline(model, args)
        top = model.predict(args.video, topk=args.topk, num_clips=args.clips, num_crops=args.crops)
    except (FileNotFoundError, CheckpointReadError, CheckpointMetadataError, VideoReadError, DatasetFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    p = model.preprocessing
    views = (args.clips or p.test_num_clips) * (args.crops or p.test_num_crops)
    print(f"{args.video}: {views} views of {p.num_frames} frames x {p.sampling_rate} at {p.crop_size}^2")
    width = max(len(name) for name, _ in top)
    for name, prob in top:
        print(f"  {name:<{width}}  {prob:6.1%}")
    return 0


def timeline(model, args: argparse.Namespace) -> int:
    """Write the per-window timeline of ``args.video`` and print where, with the change points of the top class."""
    from pathlib import Path

    from mvit_video.timeline import predict_timeline, write_timeline

    stride = args.stride or args.window
    kw = dict(batch_size=args.batch_size, num_clips=args.clips, num_crops=args.crops, progress=sys.stderr.isatty())
    tl = predict_timeline(model, args.video, args.window, stride, **kw)
    paths = write_timeline(tl, Path(args.out), f"{Path(args.video).name}.timeline", args.topk, str(args.ckpt))
    print(
        f"{args.video}: {len(tl.starts)} windows of {args.window:g} s every {stride:g} s, {tl.views[0]}x{tl.views[1]} views each"
    )
    for t, before, after in tl.change_points():
        print(f"  {t:8.2f} s  {before} -> {after}")
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
