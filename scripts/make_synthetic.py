#!/usr/bin/env python
"""Write the synthetic Kinetics-format dataset (real H.264 mp4 files + train/val/test CSVs + classnames.txt)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from mvit_video.data.synthetic import CLASSES, SyntheticSpec, make_synthetic_kinetics

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", help="output folder")
    parser.add_argument("--num-classes", type=int, default=8, help=f"2..{len(CLASSES)}: {', '.join(CLASSES)}")
    parser.add_argument("--train-per-class", type=int, default=SyntheticSpec.train_per_class)
    parser.add_argument("--val-per-class", type=int, default=SyntheticSpec.val_per_class)
    parser.add_argument("--test-per-class", type=int, default=SyntheticSpec.test_per_class)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    spec = SyntheticSpec(
        num_classes=args.num_classes,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
    )
    root = make_synthetic_kinetics(args.root, spec, workers=args.workers)
    print(f"wrote {root}: train.csv val.csv test.csv classnames.txt videos/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
