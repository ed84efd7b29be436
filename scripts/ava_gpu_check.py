#!/usr/bin/env python
"""The AVA detector on a GPU at full resolution (non-square token grids): parity and training-step cost.

    python scripts/ava_gpu_check.py                     # parity, S 16x224x298, L 40x312x416 and 40x312x312
    python scripts/ava_gpu_check.py l312_nockpt         # L 40x312 without activation checkpointing (memory)

``parity``: the S detector's fp32 logits on CUDA (TF32 off) vs the same model in fp64 on the CPU, one 16x224x298 clip
with two boxes. The other runs: 4 SGD steps of the detector under bf16 autocast, batch 8 clips x 2 boxes (the paper's
8 clips per GPU), printing the fastest of the last 3 steps and the peak memory. Needs only torch and this package.
"""

from __future__ import annotations

import argparse
import time

RUNS = {  # name: (preset, frames, height, width, activation checkpointing)
    "s": ("mvitv2_s_16x4", 16, 224, 298, False),
    "l416": ("mvitv2_l_40x3", 40, 312, 416, True),
    "l312": ("mvitv2_l_40x3", 40, 312, 312, True),
    "l312_nockpt": ("mvitv2_l_40x3", 40, 312, 312, False),
}


def parity(dev) -> None:
    import torch

    from mvit_video.models import build_model
    from mvit_video.models.detector import build_ava_detector

    torch.manual_seed(0)
    det = build_ava_detector(build_model("mvitv2_s_16x4", num_classes=0), num_classes=80, dropout=0.0).eval()
    x = torch.randn(1, 3, 16, 224, 298)  # (B, C, T, H, W): a 4:3 frame at short side 224
    boxes = torch.tensor([[0, 4.0, 10.0, 120.0, 220.0], [0, 200.0, 30.0, 297.0, 223.0]])  # (K, 5)
    with torch.no_grad():
        ref = det.double().logits(x.double(), boxes.double())  # (K, 80)
        out = det.float().to(dev).logits(x.to(dev), boxes.to(dev)).double().cpu()
    print(
        f"S full-res 224x298 fp32 CUDA vs fp64 CPU: max |diff| {(out - ref).abs().max():.3g}, max |logit| {ref.abs().max():.3g}"
    )


def train_steps(dev, preset: str, t: int, h: int, w: int, checkpointing: bool, batch: int = 8) -> None:
    import torch
    import torch.nn.functional as F

    from mvit_video.models import build_model
    from mvit_video.models.detector import build_ava_detector

    torch.manual_seed(0)
    backbone = build_model(preset, num_classes=0, drop_path_rate=0.4)
    backbone.set_grad_checkpointing(checkpointing)
    det = build_ava_detector(backbone, num_classes=80).to(dev).train()
    opt = torch.optim.SGD(det.parameters(), lr=1e-3, momentum=0.9)
    video = torch.randn(batch, 3, t, h, w, device=dev)  # (B, C, T, H, W)
    left, right = [10.0, 10.0, w * 0.4, h * 0.9], [w * 0.5, 5.0, w - 1.0, h - 1.0]
    boxes = torch.tensor([[i // 2, *(left if i % 2 == 0 else right)] for i in range(2 * batch)], device=dev)  # (K, 5)
    labels = (torch.rand(2 * batch, 80, device=dev) < 0.05).float()  # (K, 80)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(4):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = det.logits(video, boxes)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"{preset} {t}x{h}x{w} batch {batch} bf16 checkpointing={checkpointing}: step {min(times[1:]):.3f} s, peak {peak:.1f} GiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help=f"of parity, {', '.join(RUNS)} (default: parity s l416 l312)")
    args = parser.parse_args(argv)
    runs = args.runs or ["parity", "s", "l416", "l312"]
    if unknown := set(runs) - {"parity", *RUNS}:
        parser.error(f"unknown runs {sorted(unknown)}: expected parity or one of {list(RUNS)}")
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device", file=__import__("sys").stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), torch.__version__)
    for run in runs:
        parity(dev) if run == "parity" else train_steps(dev, *RUNS[run])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
