#!/usr/bin/env python
"""Print parameters and GFLOPs per view of every paper preset next to the paper's values (mvit_video/recipes.py).

GFLOPs: torch.utils.flop_counter, one multiply-add = one FLOP, LayerNorm counted as fvcore does
(see mvit_video/models/flops.py). Everything is built on the meta device: no memory, no weights.

    python scripts/model_report.py [--only PRESET ...]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="presets to report (default: all)")
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
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
