#!/usr/bin/env python
"""Our resolved experiment configs next to the official MViTv2 recipes (mvit_video/recipes.py, spec §2.1-2.3), and
next to the paper's where no config ships one (MViTv2-L §B.4, AVA §B.6).

For every experiment with an official counterpart, prints each recipe value (ours | official | verdict) and
exits non-zero on any difference that the experiment file does not declare under ``recipe_deviations`` with its
reason; a declared deviation that is no longer a difference is an error too. A value that neither the paper nor a
config gives (``recipes.UNSOURCED``) must be declared there too, with the choice made. It also checks that the
learning rates scale with the number of nodes, as SlowFast's BASE_LR_SCALE_NUM_SHARDS does.

    python scripts/recipe_diff.py [EXPERIMENT ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mvit_video.recipes import LR_KEYS, NOT_RECIPES, OFFICIAL, REQUIRED, UNSOURCED

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_experiment(name: str, extra: list[str] | None = None) -> DictConfig:
    from hydra import compose, initialize_config_dir

    from mvit_video.train import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", "paths.output_dir=.", *(extra or [])])


def _same(ours: object, official: object) -> bool:
    if official == REQUIRED:
        return ours is not None
    if isinstance(official, float) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
        return abs(ours - official) <= 1e-12 * max(1.0, abs(official))
    return ours == official


def check(name: str, overrides: list[str] | None = None) -> list[str]:
    """Print the comparison of one experiment (with optional Hydra overrides); return its errors."""
    from omegaconf import OmegaConf

    source, official = OFFICIAL[name].source, OFFICIAL[name].values
    cfg = compose_experiment(name, overrides)
    declared = cfg.get("recipe_deviations")
    deviations = OmegaConf.to_container(declared, resolve=True) if declared is not None else {}
    errors = []
    print(f"\n== {name}  (official: {source})")
    print(f"   {'key':34s} {'ours':>28s} {'official':>28s}  verdict")
    for key, want in official.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got, resolve=True) if OmegaConf.is_config(got) else got
        same = _same(got, want)
        if same:
            verdict = "ok"
        elif want == UNSOURCED and key in deviations:
            verdict = f"unsourced, chosen: {deviations[key]}"
        elif key in deviations:
            verdict = f"intended: {deviations[key]}"
        elif want == UNSOURCED:
            verdict = "NO SOURCE (declare the choice in recipe_deviations)"
            errors.append(f"{name}: {key} = {got!r} has no source; declare the choice in recipe_deviations")
        else:
            verdict = "DIFFERENT (not declared in recipe_deviations)"
            errors.append(f"{name}: {key} = {got!r}, official {want!r}")
        shown = "(no source)" if want == UNSOURCED else str(want)
        print(f"   {key:34s} {str(got):>28s} {shown:>28s}  {verdict}")
    for key in deviations:
        if key not in official:
            errors.append(f"{name}: recipe_deviations.{key} names no official value")
        elif _same(OmegaConf.select(cfg, key), official[key]):
            errors.append(f"{name}: recipe_deviations.{key} is declared but the value is the official one")
    scaled = compose_experiment(name, [*(overrides or []), "trainer.num_nodes=4"])
    for key in LR_KEYS:
        one, four = OmegaConf.select(cfg, key), OmegaConf.select(scaled, key)
        if key in official and not _same(four, 4 * one):
            errors.append(f"{name}: {key} does not scale with trainer.num_nodes ({one} at 1 node, {four} at 4)")
    print(f"   learning rates x nodes: {'ok' if not any('scale' in e for e in errors) else 'NOT SCALED'}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="default: every experiment in conf/experiment")
    args = parser.parse_args(argv)
    names = args.experiments or sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    errors = []
    for name in names:
        if name in OFFICIAL:
            errors += check(name)
        elif name in NOT_RECIPES:
            print(f"\n== {name}: skipped, {NOT_RECIPES[name]}")
        else:
            errors.append(f"{name}: not known to recipe_diff.py; add its official values or a reason to skip it")
    print()
    for e in errors:
        print(f"ERROR {e}")
    print(f"{len(names)} experiments, {len(errors)} unexplained differences")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
