"""Train / test entry point: `python train.py [experiment=...] [overrides]`. See README.md."""

import hydra
from omegaconf import DictConfig

from mvit_video.train import run  # also registers the config's resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the config's ``objective`` (e.g. ``val/top1``, AVA ``val/mAP``) for sweepers that optimise it."""
    return run(cfg).get(cfg.objective)


if __name__ == "__main__":
    main()  # Hydra's main returns None (a sweep's objective goes to the sweeper)
