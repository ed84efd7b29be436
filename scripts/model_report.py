#!/usr/bin/env python
"""Print parameters and GFLOPs per view of every paper preset next to the paper's values (mvit_video/recipes.py).

GFLOPs: torch.utils.flop_counter, one multiply-add = one FLOP, LayerNorm counted as fvcore does
(see mvit_video/models/flops.py). Everything is built on the meta device: no memory, no weights.
``--timm`` then builds each image preset that timm also has with real random weights and prints the max abs
fp32 logit difference to timm's model (needs timm, the dev extra; H takes ~1 min on 2 cores).

    python scripts/model_report.py [--only PRESET ...] [--timm]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="presets to report (default: all)")
    parser.add_argument("--timm", action="store_true", help="also compare the image presets' logits with timm's")
    args = parser.parse_args(argv)

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
