"""Train / test entry point: `python train.py [experiment=...] [overrides]`. See README.md."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("MVIT_ROOT", str(Path(__file__).resolve().parent))

from mvit_video.train import run  # noqa: E402  (after MVIT_ROOT is set)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    return metrics.get("val/top1")  # for sweepers that optimise a value


if __name__ == "__main__":
    main()
