#!/usr/bin/env python
"""Print parameters and GFLOPs per view of every paper preset next to the paper's values (mvit_video/recipes.py).

GFLOPs: torch.utils.flop_counter, one multiply-add = one FLOP, LayerNorm counted as fvcore does
(see mvit_video/models/flops.py). Everything is built on the meta device: no memory, no weights.
``--timm`` then builds each image preset that timm also has with real random weights and prints the max abs
fp32 logit difference to timm's model (needs timm, the dev extra; H takes ~1 min on 2 cores).
``--experiments [NAME ...]`` instead prints each experiment's model (conf/experiment, resolved as train.py does)
with its GFLOPs per view times its test views (data.test_num_crops x data.test_num_clips) beside the paper's row
(``recipes.PAPER_VIEWS``, arXiv 2112.01526v2 Tables 10-13); it fails on views that differ from the paper's, or on
GFLOPs more than 1% off unless the row says why. Counted on meta tensors too (MViTv2-L at 40x352^2: seconds).

    python scripts/model_report.py [--only PRESET ...] [--timm]
    python scripts/model_report.py --experiments [EXPERIMENT ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="presets to report (default: all)")
    parser.add_argument("--timm", action="store_true", help="also compare the image presets' logits with timm's")
    parser.add_argument(
        "--experiments", nargs="*", metavar="EXPERIMENT", help="instead: GFLOPs x views per experiment (default: all)"
    )
    args = parser.parse_args(argv)
    if args.experiments is not None:
        names = args.experiments or sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        return 0 if _experiment_views(names) else 1

    import torch

    from mvit_video.models import build_model
    from mvit_video.models.flops import count_gflops
    from mvit_video.recipes import PAPER, params_match

    header = f"{'preset':<15}{'classes':>8}{'params':>14}{'paper':>14}{'ratio':>9}{'GFLOPs':>10}{'paper':>9}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    ok = True
    for row in PAPER:
        if args.only and row.preset not in args.only:
            continue
        with torch.device("meta"):
            model = build_model(row.preset, num_classes=row.num_classes)
        params = sum(p.numel() for p in model.parameters())
        gflops = count_gflops(model, row.input_shape)
        exact = isinstance(row.params, int)
        paper_params = row.params if exact else row.params * 1e6
        p_ok = params_match(params, row.params)
        f_ok = abs(gflops / row.gflops - 1) <= 0.01
        ok &= p_ok and f_ok
        paper_p = f"{row.params:,}" if exact else f"{row.params:.2f}M"
        print(
            f"{row.preset:<15}{row.num_classes:>8}{params:>14,}{paper_p:>14}{params / paper_params:>9.5f}"
            f"{gflops:>10.2f}{row.gflops:>9.2f}{gflops / row.gflops:>8.4f}{'' if p_ok and f_ok else '  MISMATCH'}"
        )
    print("all parameter counts equal and GFLOPs within 1%" if ok else "MISMATCH found")
    if args.timm:
        ok &= _timm_parity(args.only)
    return 0 if ok else 1


def _experiment_views(names: list[str]) -> bool:
    """Print each experiment's model and GFLOPs per view x test views beside the paper's (``recipes.PAPER_VIEWS``);
    True if every row with a paper value has its views and, unless a note says why not, its GFLOPs (within 1%)."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mvit_video.models.flops import count_gflops
    from mvit_video.recipes import PAPER_VIEWS
    from mvit_video.train import register_resolvers

    register_resolvers()
    header = f"{'experiment':<28}{'model':<16}{'input':>10}{'GFLOPs':>10}{'views':>7}{'paper':>8}{'views':>7}  verdict"
    print(f"views: spatial crops x temporal clips (the paper's order)\n{header}\n{'-' * len(header)}")
    counted: dict[tuple, float] = {}  # (model config, input) -> GFLOPs: each shape counted once
    ok = True
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in names:
            cfg = compose("train", overrides=[f"experiment={name}", "paths.output_dir=."])
            if cfg.model._target_ != "mvit_video.models.build_model":
                print(f"{name:<28}skipped: a detector ({cfg.model._target_}), no test views")
                continue
            frames, crop = cfg.data.num_frames, cfg.data.crop_size
            # image sets test one centre crop per image and have no views keys
            crops, clips = (OmegaConf.select(cfg, f"data.test_num_{k}", default=1) for k in ("crops", "clips"))
            key = repr(OmegaConf.to_container(cfg.model, resolve=True))  # frames and size resolved: one count per shape
            if key not in counted:
                with torch.device("meta"):
                    model = instantiate(cfg.model)
                counted[key] = count_gflops(model, (1, 3, frames, crop, crop) if model.cfg.video else (1, 3, crop, crop))
            gflops, size = counted[key], f"{frames}x{crop}²" if frames > 1 else f"{crop}²"
            row = f"{name:<28}{cfg.model.name:<16}{size:>10}{gflops:>10.2f}{f'{crops}x{clips}':>7}"
            paper = PAPER_VIEWS.get(name)
            if paper is None:
                print(f"{row}{'-':>8}{'-':>7}  no paper row")
                continue
            views_ok = (crops, clips) == (paper.crops, paper.clips)
            flops_ok = abs(gflops / paper.gflops - 1) <= 0.01
            if views_ok and flops_ok:
                verdict = f"ok ({paper.source})"
            elif views_ok and paper.note:
                verdict = f"GFLOPs differ ({paper.source}): {paper.note}"
            else:
                verdict = f"DIFFERS ({paper.source}: {'GFLOPs' if views_ok else 'views'})"
                ok = False
            print(f"{row}{paper.gflops:>8g}{f'{paper.crops}x{paper.clips}':>7}  {verdict}")
    print("every experiment with a paper row has its views and GFLOPs" if ok else "DIFFERENCE from the paper found")
    return ok


def _timm_parity(only: list[str] | None, tol: float = 1e-4) -> bool:
    """Print our logits against timm's per image preset (same random weights, fp32); True if all within ``tol``."""
    from mvit_video.models.convert import TIMM_MODELS, timm_logit_diff

    print(f"\n{'preset':<15}{'timm model':<20}{'max |logit diff|':>18}")
    ok = True
    for preset, theirs in TIMM_MODELS.items():
        if only and preset not in only:
            continue
        diff = timm_logit_diff(preset)
        ok &= diff <= tol
        print(f"{preset:<15}{theirs:<20}{diff:>18.3e}{'' if diff <= tol else '  MISMATCH'}")
    print(f"all within {tol:g} of timm" if ok else "MISMATCH found")
    return ok


if __name__ == "__main__":
    sys.exit(main())
