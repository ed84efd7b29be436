#!/usr/bin/env python
"""Print parameters and GFLOPs per view of every paper preset next to the paper's values.

GFLOPs: torch.utils.flop_counter, one multiply-add = one FLOP, LayerNorm counted as fvcore does
(see mvit_video/models/flops.py). Everything is built on the meta device: no memory, no weights.
"""

from __future__ import annotations

import argparse

import torch

from mvit_video.models import build_model
from mvit_video.models.flops import count_gflops

# (preset, classes, input shape, paper params, paper GFLOPs); sources: spec §0 and §3.
ROWS = [
    ("mvitv2_s_16x4", 400, (1, 3, 16, 224, 224), 34_537_744, 64.5),
    ("mvitv2_b_32x3", 400, (1, 3, 32, 224, 224), 51_230_128, 225.2),
    ("mvitv2_l_40x3", 400, (1, 3, 40, 312, 312), 213_390_112, 2828.1),
    ("mvitv2_s_16x4", 174, (1, 3, 16, 224, 224), 34_363_950, 64.5),
    ("mvitv2_b_32x3", 174, (1, 3, 32, 224, 224), 51_056_334, 225.2),
    ("mvitv2_l_40x3", 174, (1, 3, 40, 312, 312), 213_129_534, 2828.1),
    ("mvitv2_t", 1000, (1, 3, 224, 224), 24.17e6, 4.70),
    ("mvitv2_s", 1000, (1, 3, 224, 224), 34.87e6, 7.00),
    ("mvitv2_b", 1000, (1, 3, 224, 224), 51.47e6, 10.16),
    ("mvitv2_l", 1000, (1, 3, 224, 224), 217.99e6, 43.87),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="presets to report (default: all)")
    args = parser.parse_args()
    header = f"{'preset':<15}{'classes':>8}{'params':>14}{'paper':>14}{'ratio':>9}{'GFLOPs':>10}{'paper':>9}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    ok = True
    for name, classes, shape, paper_params, paper_gflops in ROWS:
        if args.only and name not in args.only:
            continue
        with torch.device("meta"):
            model = build_model(name, num_classes=classes)
        params = sum(p.numel() for p in model.parameters())
        gflops = count_gflops(model, shape)
        exact = isinstance(paper_params, int)
        p_ok = params == paper_params if exact else round(params / 1e6, 2) == paper_params / 1e6
        f_ok = abs(gflops / paper_gflops - 1) <= 0.01
        ok &= p_ok and f_ok
        paper_p = f"{paper_params:,}" if exact else f"{paper_params / 1e6:.2f}M"
        print(
            f"{name:<15}{classes:>8}{params:>14,}{paper_p:>14}{params / paper_params:>9.5f}"
            f"{gflops:>10.2f}{paper_gflops:>9.2f}{gflops / paper_gflops:>8.4f}{'' if p_ok and f_ok else '  MISMATCH'}"
        )
    print("all parameter counts equal and GFLOPs within 1%" if ok else "MISMATCH found")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
