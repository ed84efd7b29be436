#!/usr/bin/env python
"""Speed and memory of mvit_video against its peers, measured side by side in one run (medians after a warm-up).

    python scripts/benchmark.py                 # MViTv2-S 16x224^2 vs torchvision mvit_v2_s; writes docs/benchmarks.md
    python scripts/benchmark.py --tiny          # smoke run on the tiny preset (no torchvision counterpart)
    python scripts/benchmark.py --only ava data # a subset of: inference training data ava kernels throughput
    scripts/gpu_check.sh OUT_DIR                # on a GPU machine: the tests on cuda, then the GPU steps (make gpu-check)

inference: batch 1, fp32, ours / torchvision with the same weights, eager and ``torch.compile``d (``--compile``), and
  the share of the measured fp32 matmul peak (2048^3 products timed in the same rounds as the models).
training: a step (batch 2, AdamW) of ours / torchvision / ours with activation checkpointing, eager and compiled,
  alternated. Peak memory, one method per device: CUDA, ``max_memory_allocated`` above what was allocated before the
  steps; CPU, the peak RSS (VmHWM, reset before the steps) above the RSS before them, in a fresh process per setting
  with glibc returning freed blocks >= 64 KiB to the system (so RSS follows the live tensors).
data: training clips/s with 2 workers on the synthetic Kinetics set, per decoder, and pytorchvideo's ``Kinetics``.
ava: the vectorised evaluator / the per-row reference (``scripts/bench_ava_eval.py``, the one copy of that benchmark).
kernels: which fused-attention kernels (flash / memory-efficient / cuDNN / math) accept our attention calls, each
  alone (``sdpa_kernel([backend])``), their forward + backward time, and the one the default dispatch selects (read off
  the profiler's op names), in fp32 and bf16.
throughput: MViTv2-S and -B clips/s, forward and training step, fp32 and bf16 autocast, eager / with activation
  checkpointing / compiled, with each training step's peak memory on CUDA (for GPUs; ``--tiny`` runs its logic on CPU).

Compiled settings are a compiled copy of the model (the eager one stays eager); the first call's time (the compile) is
reported apart. ``--budget-s`` skips the rows that would start after the budget is spent, and the table is rewritten
after every step and throughput row, so a run stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import runpy
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Throughput presets: (frames, crop, batch); batches are per-GPU training batches of the official recipes (64 clips on
# 8 GPUs for S; B's 32-frame clips at half that).
PRESETS = {"mvitv2_s_16x4": (16, 224, 8), "mvitv2_b_32x3": (32, 224, 4)}
TINY = {"mvitv2_tiny": (8, 64, 2)}
NAMES = {"mvitv2_s_16x4": "MViTv2-S 16x224^2", "mvitv2_b_32x3": "MViTv2-B 32x224^2", "mvitv2_tiny": "MViTv2-tiny 8x64^2"}
COMPILE_RESERVE_S = 60.0  # a compiled row does not start with less than this left of --budget-s (compiles take ~that)


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


def alternated(fns: dict, repeats: int, device: str) -> tuple[dict, dict]:
    """Median seconds of each closure, timed in rounds (one call of each per round, so all see the same machine
    state), and the first call's seconds apart (round 0: the warm-up, the compile for a compiled setting)."""
    times: dict = {name: [] for name in fns}
    for _ in range(repeats + 1):
        for name, fn in fns.items():
            times[name].append(median_time(fn, 1, device, warmup=0))
    return {k: statistics.median(v[1:]) for k, v in times.items()}, {k: v[0] for k, v in times.items()}


def machine(device: str) -> str:
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    cpu = name[1].strip() if name else platform.processor() or platform.machine()
    gpu = ""
    if device == "cuda":
        tf32 = f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}"
        gpu = f", GPU: {torch.cuda.get_device_name()} ({tf32})"
    load = f", load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}" if hasattr(os, "getloadavg") else ""
    threads = f"{torch.get_num_threads()} threads"
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({threads}){gpu}; run on {device}{load} at the start"


def build(preset: str, device: str, batch: int = 1):
    """Our ``preset`` in eval mode with random weights, and a random input batch ``(batch, 3, T, H, W)``."""
    import torch

    from mvit_video.models import build_model

    frames, size, _ = {**PRESETS, **TINY}[preset]
    net = build_model(preset, num_classes=10 if preset in TINY else 400)
    return net.to(device).eval(), torch.randn(batch, 3, frames, size, size, device=device)


def model(which: str, tiny: bool, device: str):
    """``ours`` or ``torchvision``'s MViTv2-S 16x4 (tiny: our tiny preset, no torchvision one) in eval mode, and an input."""
    from torchvision.models.video import mvit_v2_s

    net, x = build("mvitv2_tiny" if tiny else "mvitv2_s_16x4", device)
    return (mvit_v2_s().to(device).eval() if which == "torchvision" else net), x


def dynamo_limits() -> None:
    """Room for every compiled variant: regional compilation shares one code object (the block's forward) across
    blocks, stages, precisions and grad modes, more than dynamo's default 8 recompiles of one function."""
    import torch._dynamo

    cfg = torch._dynamo.config
    for name, value in (("recompile_limit", 256), ("cache_size_limit", 256), ("accumulated_recompile_limit", 4096)):
        if hasattr(cfg, name):  # recompile_* since torch 2.6, cache_size_* before
            setattr(cfg, name, value)
            if name == "recompile_limit":
                break


def compiled(net, args: argparse.Namespace):
    """A compiled copy of ``net``: the whole model (``--compile model``), or each block (``blocks``: regional
    compilation, the blocks of a stage share one graph, so the compile grows with the stages, not the depth).
    ``dynamic=False``: a benchmark's shapes are fixed, and dynamo's automatic dynamic shapes (on the second shape a
    block's code sees) would trace the blocks symbolically: slower to compile (4x on the tiny model) and to run."""
    import torch

    dynamo_limits()
    if args.profile or args.freezing:
        import torch._inductor.config

        # --profile: inductor's generated CPU kernels show up in the profile under their own names. --freezing:
        # weights folded in as constants, prepacked for oneDNN (no-grad graphs only; training graphs ignore it).
        torch._inductor.config.cpp.enable_kernel_profile = bool(args.profile)
        torch._inductor.config.freezing = args.freezing
    net = copy.deepcopy(net)
    if args.compile == "blocks":
        for blk in net.blocks:  # ours and torchvision's both keep their blocks in .blocks
            blk.compile(backend=args.compile_backend, dynamic=False)
        return net
    return torch.compile(net, backend=args.compile_backend, dynamic=False)


def out_of_time(args: argparse.Namespace, need_s: float) -> bool:
    """Whether fewer than ``need_s`` seconds are left of ``--budget-s`` (never without a budget)."""
    return args.deadline is not None and args.deadline - time.monotonic() < need_s


def error_text(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:160]}"


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
    nets = {"ours": ours, "torchvision": tv} if tv is not None else {"ours": ours}
    if args.compile != "none" and not out_of_time(args, COMPILE_RESERVE_S):
        nets |= {f"{k}_compiled": compiled(net, args) for k, net in list(nets.items())}
    fns = {k: (lambda net=net: net(x)) for k, net in nets.items()}
    fns["matmul"] = lambda: [a @ b for _ in range(5)]  # the peak, in the same rounds: the same machine state
    with torch.no_grad():
        med, first = alternated(fns, args.repeats, device)
        logits = {k: net(x) for k, net in nets.items()}
    out = {"peak_flops": 5 * 2 * 2048**3 / med["matmul"]}
    if args.profile:  # where one inference of ours spends its time, compiled if it was
        from torch.profiler import ProfilerActivity, profile

        which = "ours_compiled" if "ours_compiled" in fns else "ours"
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fns[which]()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile, max_name_column_width=70)
        out["profile"] = f"{which}:\n{table}"
    for k in nets:
        out[f"{k}_s"], out[f"{k}_share"] = med[k], flops / med[k] / out["peak_flops"]
        if k.endswith("_compiled"):  # the compile's cost, and that it computes what the eager model does
            out[f"{k}_first_s"] = first[k]
            out[f"{k}_diff"] = float((logits[k] - logits[k.removesuffix("_compiled")]).abs().max())
    out["share"] = out["ours_share"]
    if tv is not None:
        out["ratio"] = out["ours_s"] / out["torchvision_s"]
        out["max_logit_diff"] = float((logits["ours"] - logits["torchvision"]).abs().max())
    return out


def autocast(device: str, dtype=None):
    """``torch.autocast`` at ``dtype`` (bf16), or no context for fp32 / None."""
    import contextlib

    import torch

    return torch.autocast(device, dtype=dtype) if dtype not in (None, torch.float32) else contextlib.nullcontext()


def train_step(net, x, device: str, dtype=None):
    """A closure running one training step of ``net`` at ``x``'s batch (forward, backward, AdamW); ``dtype``:
    autocast (bf16) around the forward and the loss, whose ``cross_entropy`` autocast runs in fp32."""
    import torch

    y = torch.randint(0, 10, (x.shape[0],), device=device)  # (B,)
    opt = torch.optim.AdamW(net.train().parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    return step


def step_memory(tiny: bool, device: str, checkpointing: bool) -> int:
    """Peak bytes of two training steps of ours above what was held before them (the method of the docstring)."""
    import torch

    net, x = model("ours", tiny, device)
    net.set_grad_checkpointing(checkpointing)
    step = train_step(net, x.repeat(2, 1, 1, 1, 1), device)
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
    x = x.repeat(2, 1, 1, 1, 1)  # (2, C, T, H, W)
    nets = {"ours": ours} if args.tiny else {"ours": ours, "torchvision": model("torchvision", False, device)[0]}
    if args.compile != "none" and not out_of_time(args, COMPILE_RESERVE_S):
        nets |= {f"{k}_compiled": compiled(net, args) for k, net in list(nets.items())}
    fns = {k: train_step(net, x, device) for k, net in nets.items()}
    step = fns["ours"]
    fns["ours_ckpt"] = lambda: (ours.set_grad_checkpointing(True), step(), ours.set_grad_checkpointing(False))
    med, first = alternated(fns, args.repeats, device)
    out = dict(med) | {f"{k}_first_s": v for k, v in first.items() if k.endswith("_compiled")}
    if "torchvision" in med:
        out["ratio"] = med["ours"] / med["torchvision"]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for name, ckpt in (("mem", False), ("mem_ckpt", True)):
        if device == "cuda":
            out[name] = step_memory(args.tiny, device, ckpt)
        else:  # a fresh process per setting: its peak RSS is its own
            cmd = [sys.executable, __file__, "--memory-worker", json.dumps([args.tiny, device, ckpt])]
            out[name] = int(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.split()[-1])
    return out


def sdpa_calls(net, x, dtype) -> list:
    """The distinct ``F.scaled_dot_product_attention`` calls of one forward of ``net`` (shape, strides and dtype of
    q, k, v; keyword arguments) with how often each occurs: ``[(args, kwargs, count)]``, the tensors detached."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    seen: dict = {}

    class Capture(TorchFunctionMode):  # sees the call however attention.py names the function
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                key = tuple((tuple(t.shape), t.stride(), t.dtype) for t in args[:3]) + (repr(sorted(kwargs.items())),)
                qkv = tuple(t.detach().to(dtype).clone() for t in args[:3])  # autocast's cast happens below this mode
                entry = seen.setdefault(key, [qkv, kwargs, 0])
                entry[2] += 1
            return func(*args, **kwargs)

    with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32), Capture():
        net(x)
    return [tuple(v) for v in seen.values()]


def sdpa_fwd_bwd(calls: list, device: str):
    """A closure running every captured call (``count`` times) forward and backward."""
    import torch.nn.functional as F

    leaves = [([t.clone().requires_grad_() for t in qkv], kwargs, count) for qkv, kwargs, count in calls]

    def run():
        for qkv, kwargs, count in leaves:
            for _ in range(count):
                F.scaled_dot_product_attention(*qkv, **kwargs).sum().backward()

    return run


def bench_kernels(args: argparse.Namespace, device: str) -> dict:
    """Per precision: each backend alone (accepts our shapes? forward + backward seconds), the default, and the
    backend the default dispatch picks (the profiler's ``aten::_scaled_dot_product_*`` op names)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    preset = "mvitv2_tiny" if args.tiny else "mvitv2_s_16x4"
    net, x = build(preset, device, args.batch or {**PRESETS, **TINY}[preset][2])
    out: dict = {"model": f"{NAMES[preset]}, batch {x.shape[0]}"}
    backends = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    for dtype in (torch.float32, torch.bfloat16):
        calls = sdpa_calls(net, x, dtype)
        res: dict = {
            "calls": sum(c for _, _, c in calls),
            "head_sizes": sorted({qkv[0].shape[-1] for qkv, _, _ in calls}),
            "backends": {},
        }
        for name, member in backends.items():
            backend = getattr(SDPBackend, member, None)
            if backend is None:  # an older torch without this backend
                res["backends"][name] = "not in this torch"
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    with sdpa_kernel([backend]):
                        res["backends"][name] = median_time(sdpa_fwd_bwd(calls, device), args.repeats, device)
                except RuntimeError:  # the reason is in the dispatcher's warnings (CUDA); none on CPU
                    # the dispatcher warns per backend: a header line, then its reasons; keep the reasons
                    lines = [m.strip() for w in caught for m in str(w.message).split("\n")]
                    reasons = [m for m in lines if m and "not used because" not in m and "Triggered internally" not in m]
                    res["backends"][name] = "rejected" + (f" ({reasons[0][:150]})" if reasons else "")
        res["default_s"] = median_time(sdpa_fwd_bwd(calls, device), args.repeats, device)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            sdpa_fwd_bwd(calls, device)()
        ops = {e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")}
        picked = [name for name in backends if any(name in op for op in ops)]  # e.g. ..._flash_attention_for_cpu
        res["selected"] = picked or sorted(ops) or ["math (decomposed)"]
        accepted = {k: v for k, v in res["backends"].items() if isinstance(v, float)}
        res["fastest"] = min(accepted, key=accepted.get) if accepted else None
        out[str(dtype).removeprefix("torch.")] = res
    return out


def throughput_row(net, x, device: str, dtype, mode: str, args: argparse.Namespace) -> dict:
    """Clips/s of the forward (no grad) and of the training step, each step's peak memory (CUDA), the compile time."""
    import torch

    row: dict = {}
    net = compiled(net, args) if mode == "compiled" else net
    net.set_grad_checkpointing(mode == "checkpointing")

    def forward():
        net.eval()
        with torch.no_grad(), autocast(device, dtype):
            net(x)

    step = train_step(net, x, device, dtype)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        med, first = alternated({"fwd": forward, "train": lambda: (net.train(), step())}, args.repeats, device)
    finally:
        net.set_grad_checkpointing(False)
    row["fwd_clips_s"], row["train_clips_s"] = x.shape[0] / med["fwd"], x.shape[0] / med["train"]
    if device == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30  # params, grads, AdamW states, activations
    if mode == "compiled":
        row["first_s"] = first["fwd"] + first["train"]
    return row


def bench_throughput(args: argparse.Namespace, device: str) -> dict:
    """Rows in order of what matters most under a budget: eager, checkpointing, then the compiled ones (bf16 first)."""
    import torch

    presets = TINY if args.tiny else PRESETS
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    plan = [(p, d, "eager") for p in presets for d in dtypes] + [(p, d, "checkpointing") for p in presets for d in dtypes]
    if args.compile != "none":
        plan += [(p, d, "compiled") for d in ("bf16", "fp32") for p in presets]
    out: dict = {"rows": []}
    args.results["throughput"] = out  # in the table from the first row on (args.flush after each)
    nets: dict = {}
    for preset, dname, mode in plan:
        row = {"preset": preset, "dtype": dname, "mode": mode}
        out["rows"].append(row)
        if out_of_time(args, COMPILE_RESERVE_S if mode == "compiled" else 10.0):
            row["error"] = "skipped: --budget-s spent"
            continue
        batch = args.batch or presets[preset][2]
        try:
            if preset not in nets:
                nets = {preset: build(preset, device, batch)}  # one model at a time on the device
            row["batch"] = batch
            row |= throughput_row(*nets[preset], device, dtypes[dname], mode, args)
        except Exception as e:  # an out-of-memory or a failed compile: the other settings are still measured
            row["error"] = error_text(e)
            traceback.print_exc()
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        print(f"throughput {json.dumps(row)}", flush=True)
        args.flush()
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


def fmt_s(value) -> str:
    return f"{value:.3f} s" if isinstance(value, float) else str(value)


def compile_label(args: argparse.Namespace) -> str:
    scope = "the whole model" if args.compile == "model" else "each block"
    return f"torch.compile ({args.compile_backend}, {scope}{', freezing' if args.freezing else ''})"


def inference_rows(inf: dict, net: str, args: argparse.Namespace) -> list:
    rows, tv = [], "ratio" in inf
    if tv:
        what, ratio = f"inference, {net}, batch 1, fp32", f"{inf['ratio']:.2f} (max logit diff {inf['max_logit_diff']:.1e})"
        rows.append((what, fmt_s(inf["ours_s"]), f"torchvision {fmt_s(inf['torchvision_s'])}", ratio, "<= 0.5"))
    peak = f"{inf['peak_flops'] / 1e9:.0f} GFLOP/s"
    what = f"inference: share of the measured fp32 matmul peak ({peak})"
    rows.append((what, f"{100 * inf['share']:.1f}%", f"torchvision {100 * inf['torchvision_share']:.1f}%" if tv else "", "", ""))
    if "ours_compiled_s" in inf:
        first = f"compile (first call) {inf['ours_compiled_first_s']:.0f} s"
        if tv:
            first += f" / {inf['torchvision_compiled_first_s']:.0f} s"
            ratio = f"{inf['ours_compiled_s'] / inf['torchvision_compiled_s']:.2f}"
            peer = f"torchvision {fmt_s(inf['torchvision_compiled_s'])}"
        else:
            ratio, peer = "", ""
        what = f"inference, {net}, batch 1, fp32, {compile_label(args)}; {first}"
        rows.append((what, fmt_s(inf["ours_compiled_s"]), peer, ratio, ""))
        what = f"inference, compiled: share of the measured fp32 matmul peak ({peak})"
        peer = f"torchvision {100 * inf['torchvision_compiled_share']:.1f}%" if tv else ""
        rows.append((what, f"{100 * inf['ours_compiled_share']:.1f}%", peer, "", ">= 75%"))
        what = f"inference, compiled / eager (max logit diff {inf['ours_compiled_diff']:.1e})"
        ratio = f"{inf['ours_compiled_s'] / inf['ours_s']:.2f}"
        rows.append((what, fmt_s(inf["ours_compiled_s"]), f"eager {fmt_s(inf['ours_s'])}", ratio, ""))
    return rows


def training_rows(tr: dict, net: str, device: str, args: argparse.Namespace) -> list:
    rows = []
    if "ratio" in tr:
        what, peer = f"training step, {net}, batch 2, fp32", f"torchvision {fmt_s(tr['torchvision'])}"
        rows.append((what, fmt_s(tr["ours"]), peer, f"{tr['ratio']:.2f}", "<= 0.67"))
    if "ours_compiled" in tr:
        first = f"compile (first step) {tr['ours_compiled_first_s']:.0f} s"
        ratio, peer = "", ""
        if "torchvision_compiled" in tr:
            first += f" / {tr['torchvision_compiled_first_s']:.0f} s"
            ratio = f"{tr['ours_compiled'] / tr['torchvision_compiled']:.2f}"
            peer = f"torchvision {fmt_s(tr['torchvision_compiled'])}"
        what = f"training step, {net}, batch 2, fp32, {compile_label(args)}; {first}"
        rows.append((what, fmt_s(tr["ours_compiled"]), peer, ratio, ""))
        what = "training step, compiled / eager"
        ratio = f"{tr['ours_compiled'] / tr['ours']:.2f}"
        rows.append((what, fmt_s(tr["ours_compiled"]), f"eager {fmt_s(tr['ours'])}", ratio, ""))
    method = "max_memory_allocated" if device == "cuda" else "peak RSS, freed blocks returned"
    what = f"peak memory of a training step ({method}): activation checkpointing / without"
    ckpt, full = tr["mem_ckpt"], tr["mem"]
    rows.append((what, f"{ckpt / 2**30:.2f} GiB", f"{full / 2**30:.2f} GiB", f"{ckpt / full:.2f}", "<= 0.5"))
    what = "training step time with activation checkpointing / without (the recompute cost)"
    rows.append((what, fmt_s(tr["ours_ckpt"]), fmt_s(tr["ours"]), f"{tr['ours_ckpt'] / tr['ours']:.2f}", ""))
    return rows


def kernels_section(kern: dict) -> str:
    """One row per precision: each backend alone, forward + backward over all attention calls of one forward."""
    lines = [
        f"\nFused-attention kernels, {kern['model']}: every attention call of one forward, forward + backward, with "
        "each backend alone (`sdpa_kernel([backend])`) and with the default dispatch (the kernel it picks read off the "
        "profiler's op names).\n",
        "| precision | calls (q/k head sizes) | flash | memory-efficient | cuDNN | math | default: picks | fastest accepting |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dname in ("float32", "bfloat16"):
        if not isinstance(res := kern.get(dname), dict):
            continue
        cells = [fmt_s(res["backends"][b]) for b in ("flash", "efficient", "cudnn", "math")]
        heads = "/".join(map(str, res["head_sizes"]))
        picked = f"{fmt_s(res['default_s'])}: {', '.join(res['selected'])}"
        lines.append(f"| {dname} | {res['calls']} ({heads}) | {' | '.join(cells)} | {picked} | {res['fastest']} |")
    return "\n".join(lines) + "\n"


def throughput_section(thr: dict, device: str, args: argparse.Namespace) -> str:
    lines = [
        f"\nThroughput on {device} (clips/s, medians of {args.repeats} after a warm-up; a training step is forward, "
        "backward and AdamW; bf16 is autocast with fp32 weights; compiled: "
        f"{compile_label(args)}, its first forward + first step reported as the compile).\n",
        "| model | batch | precision | mode | forward clips/s | training clips/s | peak memory (training) | compile |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in thr["rows"]:
        head = f"| {NAMES[r['preset']]} | {r.get('batch', '')} | {r['dtype']} | {r['mode']} |"
        if "error" in r:
            lines.append(f"{head} {r['error']} | | | |")
            continue
        mem = f"{r['peak_gib']:.2f} GiB" if "peak_gib" in r else "n/a (CPU)"
        first = f"{r['first_s']:.0f} s" if "first_s" in r else ""
        lines.append(f"{head} {r['fwd_clips_s']:.1f} | {r['train_clips_s']:.1f} | {mem} | {first} |")
    return "\n".join(lines) + "\n"


def table(results: dict, args: argparse.Namespace, device: str, command: str) -> str:
    """The markdown report: one row (what, ours, peer, ratio ours / peer, target) per measured ratio, then the
    kernels' and the throughput's own tables; a step that failed is a line naming its error."""
    net, rows = ("MViTv2-tiny 8x64^2" if args.tiny else "MViTv2-S 16x224^2"), []
    ok = {k: v for k, v in results.items() if isinstance(v, dict) and "error" not in v}
    if inf := ok.get("inference"):
        rows += inference_rows(inf, net, args)
    if tr := ok.get("training"):
        rows += training_rows(tr, net, device, args)
    if data := ok.get("data"):
        peer, default = data["pytorchvideo_kinetics"], data["default"]
        for decoder in dict.fromkeys((default, "pyav")):
            which = f"our default decoder (auto: {decoder})" if decoder == default else "data.decoder=pyav"
            what, rate = f"training clips/s, synthetic Kinetics, 2 workers, {which}", data["decoders"][decoder]
            target = ">= 2" if decoder == default else ""
            rows.append((what, f"{rate:.1f}", f"pytorchvideo Kinetics {peer:.1f}", f"{rate / peer:.2f}", target))
    if ava := ok.get("ava"):
        what = f"AVA frame-mAP, {ava['detections']:,} detections, {ava['groundtruth']:,} boxes"
        ratio = f"{ava['slow_s'] / ava['fast_s']:.1f}x faster (same mAP: {abs(ava['fast_map'] - ava['slow_map']) < 1e-9})"
        rows.append((what, fmt_s(ava["fast_s"]), f"per-row {ava['slow_s']:.2f} s", ratio, ">= 20x"))
    head = f"# Benchmarks\n\nWritten by `{command}` on {time.strftime('%Y-%m-%d')}.\n\nMachine: {results['machine']}\n\n"
    lines = ["what", "ours", "peer", "ratio (ours / peer)", "target"], ["---"] * 5, *rows
    text = head + ("".join(f"| {' | '.join(cells)} |\n" for cells in lines) if rows else "")
    if data:
        rates = [f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in data["decoders"].items()]
        text += f"\nDecoder backends (training clips/s, same pipeline): {', '.join(rates)}\n"
    if inf and "profile" in inf:
        which, prof = inf["profile"].split(":\n", 1)
        text += f"\nWhere one inference of {which} spends its time (torch.profiler, self CPU time):\n\n```\n{prof.strip()}\n```\n"
    if kern := ok.get("kernels"):
        text += kernels_section(kern)
    if thr := results.get("throughput"):
        text += throughput_section(thr, device, args)
    failed = [f"- {k}: {v['error']}" for k, v in results.items() if isinstance(v, dict) and "error" in v]
    return text + ("\nSteps that failed (the traceback is in the run's output):\n" + "\n".join(failed) + "\n" if failed else "")


STEPS = {
    "inference": bench_inference,
    "training": bench_training,
    "data": bench_data,
    "ava": bench_ava,
    "kernels": bench_kernels,
    "throughput": bench_throughput,
}
DEFAULT_STEPS = ["inference", "training", "data", "ava"]  # kernels, throughput: GPU steps (scripts/gpu_check.sh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny preset and small cases (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), default=DEFAULT_STEPS, help="run these steps only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="data: batches timed per loader")
    parser.add_argument("--ava-rows", type=int, default=None, help="ava: detection rows (default 1,000,000; tiny 40,000)")
    parser.add_argument("--device", default=None, help="cuda where available, else cpu")
    parser.add_argument("--compile", choices=["blocks", "model", "none"], default="blocks", help="compiled rows: scope")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (tests: aot_eager, eager)")
    parser.add_argument("--batch", type=int, default=None, help="kernels, throughput: clips per batch (default: per preset)")
    parser.add_argument("--freezing", action="store_true", help="inductor freezing (CPU inference; with --compile model)")
    parser.add_argument("--profile", type=int, default=0, help="inference: the top N ops of one call of ours")
    parser.add_argument("--budget-s", type=float, default=None, help="skip rows that would start after this many seconds")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--data-dir", default=str(ROOT / "data"), help="where the synthetic Kinetics set is (made if absent)")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)  # internal: one CPU memory measurement
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(step_memory(*json.loads(args.memory_worker)))
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.deadline = None if args.budget_s is None else time.monotonic() + args.budget_s
    results: dict = {"machine": machine(device)}
    args.results = results
    command = " ".join(["python scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    args.flush = lambda: Path(args.out).write_text(table(results, args, device, command))
    failed = False
    for name in args.only:
        t = time.perf_counter()
        if name != "throughput" and out_of_time(args, 10.0):
            results[name] = {"error": "skipped: --budget-s spent"}
            continue
        try:
            results[name] = STEPS[name](args, device)
        except Exception as e:  # one step's failure (say, out of memory on a GPU) leaves the others measured
            traceback.print_exc()
            results[name], failed = {"error": error_text(e)}, True
        print(f"{name} ({time.perf_counter() - t:.0f} s): {json.dumps(results[name], default=str)}", flush=True)
        args.flush()
    args.flush()
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
