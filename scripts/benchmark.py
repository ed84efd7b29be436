#!/usr/bin/env python
"""Speed and memory of mvit_video against its peers, measured side by side in one run (medians after a warm-up).

    python scripts/benchmark.py                 # MViTv2-S 16x224^2 vs torchvision mvit_v2_s; writes docs/benchmarks.md
    python scripts/benchmark.py --tiny          # smoke run on the tiny preset (no torchvision counterpart)
    python scripts/benchmark.py --only ava data # a subset of: inference training data ava

inference: batch 1, fp32, ours / torchvision with the same weights, and the share of the measured fp32 matmul peak.
training: a step (batch 2, AdamW) of ours / torchvision / ours with activation checkpointing, alternated. Peak memory,
  one method per device: CUDA, ``max_memory_allocated`` above what was allocated before the steps; CPU, the peak RSS
  (VmHWM, reset before the steps) above the RSS before them, in a fresh process per setting with glibc returning
  freed blocks >= 64 KiB to the system (so RSS follows the live tensors).
data: training clips/s with 2 workers on the synthetic Kinetics set, per decoder, and pytorchvideo's ``Kinetics``.
ava: the vectorised evaluator / the per-row reference (``scripts/bench_ava_eval.py``, the one copy of that benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import runpy
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_time(fn, repeats: int, device: str, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones (CUDA work included)."""
    import torch

    times = []
    for _ in range(warmup + repeats):
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times[warmup:])


def machine(device: str) -> str:
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    cpu = name[1].strip() if name else platform.processor() or platform.machine()
    gpu = f", GPU: {torch.cuda.get_device_name()}" if device == "cuda" else ""
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}; run on {device}"


def model(which: str, tiny: bool, device: str):
    """``ours`` or ``torchvision``'s MViTv2-S 16x4 (tiny: our tiny preset, no torchvision one) in eval mode, and an input."""
    import torch
    from torchvision.models.video import mvit_v2_s

    from mvit_video.models import build_model

    preset, classes, frames, size = ("mvitv2_tiny", 10, 8, 64) if tiny else ("mvitv2_s_16x4", 400, 16, 224)
    net = mvit_v2_s() if which == "torchvision" else build_model(preset, num_classes=classes)
    return net.to(device).eval(), torch.randn(1, 3, frames, size, size, device=device)


def bench_inference(args: argparse.Namespace, device: str) -> dict:
    import torch

    from mvit_video.models import build_model
    from mvit_video.models.convert import convert_state_dict
    from mvit_video.models.flops import count_gflops

    tv = None if args.tiny else model("torchvision", False, device)[0]
    ours, x = model("ours", args.tiny, device)
    if tv is not None:  # the same weights, so the logits can be compared
        ours.load_state_dict(convert_state_dict(tv.state_dict(), "torchvision", ours))
    with torch.device("meta"):
        meta = build_model(ours.preset, num_classes=ours.num_classes, num_frames=x.shape[2], input_size=x.shape[-1])
    flops = 2 * count_gflops(meta, tuple(x.shape)) * 1e9  # multiply-adds -> FLOPs
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    out = {"peak_flops": 2 * 2048**3 / median_time(lambda: a @ b, 5, device)}
    with torch.inference_mode():
        out["ours_s"] = median_time(lambda: ours(x), args.repeats, device)
        out["share"] = flops / out["ours_s"] / out["peak_flops"]
        if tv is not None:
            out["torchvision_s"] = median_time(lambda: tv(x), args.repeats, device)
            out["ratio"] = out["ours_s"] / out["torchvision_s"]
            out["torchvision_share"] = flops / out["torchvision_s"] / out["peak_flops"]
            out["max_logit_diff"] = float((ours(x) - tv(x)).abs().max())
    return out


def train_step(net, x, device: str):
    """A closure running one training step of ``net`` at batch 2 (forward, backward, AdamW)."""
    import torch

    x, y = x.repeat(2, 1, 1, 1, 1), torch.randint(0, 10, (2,), device=device)  # (2, C, T, H, W), (2,)
    opt = torch.optim.AdamW(net.train().parameters(), lr=1e-4)
    loss = lambda: torch.nn.functional.cross_entropy(net(x), y)
    return lambda: (opt.zero_grad(set_to_none=True), loss().backward(), opt.step())


def step_memory(tiny: bool, device: str, checkpointing: bool) -> int:
    """Peak bytes of two training steps of ours above what was held before them (the method of the docstring)."""
    import torch

    net, x = model("ours", tiny, device)
    net.set_grad_checkpointing(checkpointing)
    step = train_step(net, x, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(), step()
        return torch.cuda.max_memory_allocated() - base
    status = lambda field: 1024 * int(re.search(rf"^{field}:\s*(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1])
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := RSS: earlier peaks (imports, model build) are not the step's
    base = status("VmRSS")
    step(), step()
    return status("VmHWM") - base


def bench_training(args: argparse.Namespace, device: str) -> dict:
    import torch

    torch.manual_seed(0)
    ours, x = model("ours", args.tiny, device)
    step = train_step(ours, x, device)
    settings = [("ours", False, step), ("ours_ckpt", True, step)]
    if not args.tiny:
        settings.append(("torchvision", False, train_step(model("torchvision", False, device)[0], x, device)))
    times: dict = {name: [] for name, _, _ in settings}
    for _ in range(args.repeats + 1):  # alternated, so every setting sees the same machine state; round 0 warms up
        for name, checkpointing, fn in settings:
            ours.set_grad_checkpointing(checkpointing)
            times[name].append(median_time(fn, 1, device, warmup=0))
    out = {name: statistics.median(t[1:]) for name, t in times.items()}
    if "torchvision" in times:
        out["ratio"] = statistics.median(o / t for o, t in zip(times["ours"][1:], times["torchvision"][1:]))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for name, ckpt in (("mem", False), ("mem_ckpt", True)):
        if device == "cuda":
            out[name] = step_memory(args.tiny, device, ckpt)
        else:  # a fresh process per setting: its peak RSS is its own
            cmd = [sys.executable, __file__, "--memory-worker", json.dumps([args.tiny, device, ckpt])]
            out[name] = int(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.split()[-1])
    return out


def bench_data(args: argparse.Namespace, device: str) -> dict:
    import torch
    from pytorchvideo.data import Kinetics, make_clip_sampler

    from mvit_video.data.decoding import DECODERS, check_decoder
    from mvit_video.data.kinetics import KineticsDataModule
    from mvit_video.data.synthetic import SyntheticSpec, make_synthetic_kinetics
    from mvit_video.data.transforms import ClipTransform

    root = Path(args.data_dir) / ("bench_tiny_kinetics" if args.tiny else "synthetic_kinetics")  # full: the demo's set
    spec = SyntheticSpec(train_per_class=6, val_per_class=1, test_per_class=1) if args.tiny else SyntheticSpec()
    make_synthetic_kinetics(root, spec)
    frames, rate, crop, batch, batches = 8, 8, 32, 8, min(args.batches, 4) if args.tiny else args.batches
    clip = dict(num_frames=frames, sampling_rate=rate, crop_size=crop, train_jitter_scales=(32, 40), random_resized_crop=False)

    def clips_per_s(loader) -> float:
        it = iter(loader)
        next(it)  # workers started
        t = time.perf_counter()
        return sum(next(it)["video"].shape[0] for _ in range(batches)) / (time.perf_counter() - t)

    out: dict = {"decoders": {}}
    for decoder in DECODERS:
        try:
            dm = KineticsDataModule(str(root), 8, decoder=decoder, flip=True, batch_size=batch, num_workers=2, **clip)
        except ImportError as e:
            out["decoders"][decoder] = f"unavailable ({str(e).split(' (')[0]})"
            continue
        dm.setup("fit")
        out["decoders"][decoder] = clips_per_s(dm.train_dataloader())
    tf = ClipTransform("train", crop, jitter_scales=(32, 40), random_resized_crop=False)

    def transform(sample: dict) -> dict:  # pytorchvideo's Kinetics, default PyAV decoder, the same clips
        video = sample["video"].permute(1, 0, 2, 3)  # (C, T, H, W) float 0-255 -> (T, C, H, W)
        idx = torch.linspace(0, video.shape[0] - 1, frames).long()
        return {"video": tf(video[idx].to(torch.uint8)), "label": sample["label"]}

    sampler = make_clip_sampler("random", frames * rate / 30)
    ds = Kinetics(str(root / "train.csv"), sampler, video_path_prefix=str(root), transform=transform, decode_audio=False)
    out["pytorchvideo_kinetics"] = clips_per_s(torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=2))
    out["default"] = check_decoder("auto")
    return out


def bench_ava(args: argparse.Namespace, device: str) -> dict:
    """The vectorised evaluator vs the per-row reference, by ``scripts/bench_ava_eval.py``'s ``measure`` (on the CPU)."""
    measure = runpy.run_path(str(ROOT / "scripts" / "bench_ava_eval.py"))["measure"]
    rows = args.ava_rows or (40_000 if args.tiny else 1_000_000)
    return measure(detections=rows, groundtruth=rows // 20, repeats=1 if args.tiny else 3)


def table(results: dict, tiny: bool, device: str, command: str) -> str:
    """The markdown report: one row (what, ours, peer, ratio ours / peer, target) per measured ratio."""
    net, rows, sec = ("MViTv2-tiny 8x64^2" if tiny else "MViTv2-S 16x224^2"), [], "{:.3f} s".format
    if inf := results.get("inference"):
        if tv := "ratio" in inf:
            what, ratio = f"inference, {net}, batch 1, fp32", f"{inf['ratio']:.2f} (max logit diff {inf['max_logit_diff']:.1e})"
            rows.append((what, sec(inf["ours_s"]), f"torchvision {sec(inf['torchvision_s'])}", ratio, "<= 0.5"))
        what = f"inference: share of the measured fp32 matmul peak ({inf['peak_flops'] / 1e9:.0f} GFLOP/s)"
        peer = f"torchvision {100 * inf['torchvision_share']:.1f}%" if tv else ""
        rows.append((what, f"{100 * inf['share']:.1f}%", peer, "", ""))
    if tr := results.get("training"):
        if "ratio" in tr:
            what, peer = f"training step, {net}, batch 2, fp32", f"torchvision {sec(tr['torchvision'])}"
            rows.append((what, sec(tr["ours"]), peer, f"{tr['ratio']:.2f}", "<= 0.67"))
        method = "max_memory_allocated" if device == "cuda" else "peak RSS, freed blocks returned"
        what = f"peak memory of a training step ({method}): activation checkpointing / without"
        ckpt, full = tr["mem_ckpt"], tr["mem"]
        rows.append((what, f"{ckpt / 2**30:.2f} GiB", f"{full / 2**30:.2f} GiB", f"{ckpt / full:.2f}", "<= 0.5"))
        what = "training step time with activation checkpointing / without (the recompute cost)"
        rows.append((what, sec(tr["ours_ckpt"]), sec(tr["ours"]), f"{tr['ours_ckpt'] / tr['ours']:.2f}", ""))
    if data := results.get("data"):
        peer, default = data["pytorchvideo_kinetics"], data["default"]
        for decoder in dict.fromkeys((default, "pyav")):
            which = f"our default decoder (auto: {decoder})" if decoder == default else "data.decoder=pyav"
            what, rate = f"training clips/s, synthetic Kinetics, 2 workers, {which}", data["decoders"][decoder]
            target = ">= 2" if decoder == default else ""
            rows.append((what, f"{rate:.1f}", f"pytorchvideo Kinetics {peer:.1f}", f"{rate / peer:.2f}", target))
    if ava := results.get("ava"):
        what = f"AVA frame-mAP, {ava['detections']:,} detections, {ava['groundtruth']:,} boxes"
        ratio = f"{ava['slow_s'] / ava['fast_s']:.1f}x faster (same mAP: {abs(ava['fast_map'] - ava['slow_map']) < 1e-9})"
        rows.append((what, sec(ava["fast_s"]), f"per-row {ava['slow_s']:.2f} s", ratio, ">= 20x"))
    head = f"# Benchmarks\n\nWritten by `{command}` on {time.strftime('%Y-%m-%d')}.\n\nMachine: {results['machine']}\n\n"
    lines = ["what", "ours", "peer", "ratio (ours / peer)", "target"], ["---"] * 5, *rows
    text = head + "".join(f"| {' | '.join(cells)} |\n" for cells in lines)
    if data:
        rates = [f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in data["decoders"].items()]
        text += f"\nDecoder backends (training clips/s, same pipeline): {', '.join(rates)}\n"
    return text


STEPS = {"inference": bench_inference, "training": bench_training, "data": bench_data, "ava": bench_ava}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny preset and small cases (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), default=list(STEPS), help="run these steps only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="data: batches timed per loader")
    parser.add_argument("--ava-rows", type=int, default=None, help="ava: detection rows (default 1,000,000; tiny 40,000)")
    parser.add_argument("--device", default=None, help="cuda where available, else cpu")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--data-dir", default=str(ROOT / "data"), help="where the synthetic Kinetics set is (made if absent)")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)  # internal: one CPU memory measurement
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(step_memory(*json.loads(args.memory_worker)))
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results: dict = {"machine": machine(device)}
    for name in args.only:
        t = time.perf_counter()
        results[name] = STEPS[name](args, device)
        print(f"{name} ({time.perf_counter() - t:.0f} s): {json.dumps(results[name], default=str)}", flush=True)
    command = " ".join(["python scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table(results, args.tiny, device, command))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
