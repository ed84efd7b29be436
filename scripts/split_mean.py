#!/usr/bin/env python
"""The 3-split mean of a UCF101 or HMDB51 multirun: the number those benchmarks report (the mean of the test
accuracies of the official splits 1, 2 and 3).

    python train.py -m experiment=ucf101_mvitv2_s data.root=/data/ucf101 init_from=CKPT data.split=1,2,3
    python scripts/split_mean.py logs/ucf101_mvitv2_s/multiruns/<date>    # [--metric test/top1]

Each run directory of the multirun (``0/``, ``1/``, ...) holds ``.hydra/config.yaml`` (its ``data.split``) and
``metrics.csv`` (the metric's last logged value is the run's). Prints one line per split and the mean; a missing
split, a split run twice, or a run without the metric is an error naming the file (exit status 2).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

SPLITS = (1, 2, 3)  # mvit_video.data.ucf101.SPLITS (not imported: the script starts without torch)


class SplitMeanError(ValueError):
    pass


def last_value(metrics_csv: Path, metric: str) -> float:
    """The last non-empty value of ``metric`` in a CSV logger's file."""
    with metrics_csv.open(newline="") as f:
        values = [row[metric] for row in csv.DictReader(f) if row.get(metric) not in (None, "")]
    if not values:
        raise SplitMeanError(f"{metrics_csv}: no {metric} value (did the run test? train.py test=true)")
    return float(values[-1])


def run_split(config_yaml: Path) -> int:
    import yaml

    cfg = yaml.safe_load(config_yaml.read_text()) or {}
    split = (cfg.get("data") or {}).get("split")
    if split not in SPLITS:
        raise SplitMeanError(f"{config_yaml}: data.split is {split!r}; expected a UCF101/HMDB51 run with data.split=1|2|3")
    return int(split)


def split_results(multirun_dir: Path, metric: str) -> dict[int, tuple[float, Path]]:
    """``{split: (metric value, run dir)}`` of the runs under ``multirun_dir``."""
    runs = sorted(p.parent.parent for p in multirun_dir.glob("*/.hydra/config.yaml"))
    if not runs:
        raise SplitMeanError(f"{multirun_dir}: no run directories (*/.hydra/config.yaml); give a Hydra multirun directory")
    out: dict[int, tuple[float, Path]] = {}
    for run in runs:
        split = run_split(run / ".hydra" / "config.yaml")
        if split in out:
            raise SplitMeanError(f"{run}: split {split} again (also in {out[split][1]}); one run per split")
        out[split] = (last_value(run / "metrics.csv", metric), run)
    missing = [s for s in SPLITS if s not in out]
    if missing:
        raise SplitMeanError(f"{multirun_dir}: no run of split {', '.join(map(str, missing))}; run data.split=1,2,3")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--metric", default="test/top1", help="the metrics.csv column to average (default: test/top1)")
    args = parser.parse_args(argv)
    try:
        results = split_results(args.multirun_dir, args.metric)
    except (SplitMeanError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, (value, run) in sorted(results.items()):
        print(f"split {split}: {args.metric} = {100 * value:.2f}%  ({run})")
    mean = sum(value for value, _ in results.values()) / len(results)
    print(f"mean over splits 1-3: {args.metric} = {100 * mean:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
