#!/usr/bin/env python
"""Classify a video with a trained checkpoint: prints the top-k class names and probabilities.

    python scripts/predict.py VIDEO --ckpt CKPT [--topk 5] [--clips N --crops M] [--class-names FILE]

The views (clips x crops) default to the checkpoint's test protocol; their softmax scores are averaged.
"""

from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (0 or -1 views or classes would fail deep inside with a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="any video file PyAV can read")
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--topk", type=positive_int, default=5)
    parser.add_argument("--clips", type=positive_int, default=None, help="temporal clips (default: the checkpoint's test views)")
    parser.add_argument("--crops", type=int, choices=(1, 3), default=None, help="spatial crops, 1 or 3")
    parser.add_argument("--class-names", default=None, help="one class name per line, replacing the checkpoint's")
    args = parser.parse_args(argv)
    from mvit_video.data.annotations import DatasetFormatError
    from mvit_video.inference import CheckpointMetadataError, VideoReadError, load  # torch: after the arguments
    from mvit_video.models.convert import CheckpointReadError

    try:
        model = load(args.ckpt, class_names=args.class_names)
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


if __name__ == "__main__":
    sys.exit(main())
