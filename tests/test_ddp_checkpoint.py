"""Activation checkpointing under DDP (2 gloo processes on the CPU, tiny preset, drop path on).

What is asserted, and why it can be exact. ``torch.utils.checkpoint`` (non-reentrant) recomputes each block's forward
in the backward from the same inputs and, by default, the same RNG state, so drop path draws the same masks. On the
CPU with a fixed thread count every op here is deterministic (the allocator aligns every buffer to 64 bytes, so
kernels take the same paths), hence the recomputed activations, the local gradients and, with the same buckets, the
all-reduced gradients are bit-identical: ``torch.equal``, no tolerance. Two optimizer steps per run, so DDP's
reducer is checked across iterations ("Expected to mark a variable ready only once" would raise in a worker)."""

import copy
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
# (grad checkpointing, find_unused_parameters): Lightning's DDP defaults (False, static_graph off) and the graph
# traversal of find_unused_parameters=True, which sees the checkpointed blocks' parameters too.
RUNS = ((False, False), (True, False), (True, True))
STEPS = 2


def _count_block_calls(model: torch.nn.Module) -> list[int]:
    """A list that grows by one per block forward (a recomputation counts too)."""
    calls: list[int] = []
    for blk in model.blocks:
        blk.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def _worker(rank: int, init_file: str, out: str) -> None:
    """Train a copy of the same tiny model ``STEPS`` SGD steps per run in ``RUNS``; save what each step saw."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from mvit_video.models import build_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    base = build_model("mvitv2_tiny", num_classes=5, drop_path_rate=0.3)
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(rank))  # each rank its own batch
    results = []
    for checkpointing, find_unused in RUNS:
        model = copy.deepcopy(base)
        model.set_grad_checkpointing(checkpointing)
        calls = _count_block_calls(model)
        ddp = DDP(model, find_unused_parameters=find_unused, static_graph=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
        torch.manual_seed(100 + rank)  # the drop-path masks: the same stream in every run
        steps = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(STEPS):
                opt.zero_grad(set_to_none=True)
                loss = ddp(x).pow(2).mean()
                loss.backward()
                steps.append(
                    {
                        "loss": loss.detach(),
                        "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
                        "strides": {n: (p.stride(), p.grad.stride()) for n, p in model.named_parameters()},
                    }
                )
                opt.step()
        results.append(
            {"steps": steps, "blocks": len(model.blocks), "block_calls": len(calls), "warnings": [str(w.message) for w in caught]}
        )
    torch.save(results, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> list[list[dict]]:
    """``[rank][run]`` results of one 2-process launch (workers' exceptions fail the test with their traceback)."""
    tmp = tmp_path_factory.mktemp("ddp_checkpoint")
    with pytest.MonkeyPatch.context() as mpatch:
        mpatch.setenv("GLOO_SOCKET_IFNAME", "lo")
        mp.spawn(_worker, args=(str(tmp / "init"), str(tmp / "res")), nprocs=WORLD, join=True)
    return [torch.load(Path(f"{tmp / 'res'}.{r}")) for r in range(WORLD)]


def test_checkpointed_ddp_gradients_equal_plain(ddp_runs):
    for rank, runs in enumerate(ddp_runs):
        plain = runs[0]
        assert plain["block_calls"] == STEPS * plain["blocks"]
        for run, (_, find_unused) in zip(runs[1:], RUNS[1:]):
            assert run["block_calls"] == STEPS * run["blocks"] * 2, "checkpointing recomputes every block in the backward"
            for step, (got, ref) in enumerate(zip(run["steps"], plain["steps"])):
                where = f"rank {rank} step {step} find_unused_parameters={find_unused}"
                assert torch.equal(got["loss"], ref["loss"]), where
                unequal = [n for n, g in got["grads"].items() if not torch.equal(g, ref["grads"][n])]
                assert not unequal, f"{where}: {len(unequal)} gradients differ, first {unequal[:4]}"
    # DDP did average: the ranks saw different batches, yet hold the same gradients.
    first = [runs[1]["steps"][0] for runs in ddp_runs]
    assert not torch.equal(first[0]["loss"], first[1]["loss"])
    for n, g in first[0]["grads"].items():
        assert torch.equal(g, first[1]["grads"][n]), n
    # Not vacuous: block 0 (drop-path rate 0, so never dropped) gets gradients in every parameter. Some of the last
    # block's are 0 by design: only its cls token reaches the head, and cls queries are neither pooled nor biased.
    assert all(g.abs().sum() > 0 for n, g in first[0]["grads"].items() if n.startswith("blocks.0."))


def test_ddp_sees_no_warning_and_gradients_strided_like_parameters(ddp_runs):
    """DDP compares grad and bucket-view strides literally (size-1 dims too); the warning fires once per process."""
    for rank, runs in enumerate(ddp_runs):
        for run, cfg in zip(runs, RUNS):
            assert run["warnings"] == [], (rank, cfg)
            for step in run["steps"]:
                assert not {n: s for n, s in step["strides"].items() if s[0] != s[1]}, (rank, cfg)
