"""The fused attention's head size stays within the kernels' limit at every preset's paper resolution, at twice it
and at AVA's full-resolution (non-square) test input; beyond the limit the sdpa path takes the reference path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mvit_video.models import attention, build_model, list_models
from mvit_video.models.attention import FUSED_HEAD_DIM_LIMIT, MultiScaleAttention, augmented_head_dim
from mvit_video.models.mvitv2 import MViTv2Config

Grid = tuple[int, int, int]


def _key_grids(cfg: MViTv2Config, thw: Grid) -> list[Grid]:
    """Each block's key grid for an input of ``thw`` frames x pixels, by the conv output-size arithmetic: the patch
    conv (kernel 3/1, 7, 7; stride 2/1, 4, 4; padding half the kernel), then per block the odd-kernel, half-padded
    pooling conv, ``(n - 1) // stride + 1``, for the keys (stride_kv) and for the next block's grid (stride_q)."""
    kt, pt = (3, 2) if cfg.video else (1, 1)
    grid = tuple((n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip(thw, (kt, 7, 7), (pt, 4, 4)))
    keys = []
    for stride_q, stride_kv in cfg.block_strides:
        keys.append(tuple((n - 1) // s + 1 for n, s in zip(grid, stride_kv)))
        grid = tuple((n - 1) // s + 1 for n, s in zip(grid, stride_q))
    return keys


def _inputs(cfg: MViTv2Config) -> dict[str, Grid]:
    """Paper resolution, twice it (frames too), and for the video presets AVA's full-resolution test input: short
    side the crop size, no crop (spec §4.3), 16:9 frames (most of AVA's movies)."""
    t, s = (cfg.num_frames, cfg.input_size) if cfg.video else (1, cfg.input_size)
    shapes = {"paper": (t, s, s), "2x": (2 * t if cfg.video else 1, 2 * s, 2 * s)}
    if cfg.video:
        shapes["ava_full_res"] = (t, s, round(s * 16 / 9))
    return shapes


def _head_dims_seen(model: torch.nn.Module, thw: Grid, monkeypatch) -> list[int]:
    """The augmented head size each attention asks for in a forward on the meta device (shapes only, no compute)."""
    seen: list[int] = []
    measure = MultiScaleAttention.augmented_head_dim
    monkeypatch.setattr(MultiScaleAttention, "augmented_head_dim", lambda self, k: seen.append(measure(self, k)) or seen[-1])
    shape = (1, 3, *thw) if model.cfg.video else (1, 3, *thw[1:])
    with torch.no_grad():
        model(torch.empty(shape, device="meta"))
    monkeypatch.setattr(MultiScaleAttention, "augmented_head_dim", measure)
    return seen


def test_augmented_head_dim_arithmetic():
    assert augmented_head_dim(96, (8, 7, 7)) == 120  # S at 224^2, stage 1: 96 + 8 + 7 + 7 = 118 -> 120
    assert augmented_head_dim(96, (8, 14, 14)) == 136  # its transition blocks: 132 -> 136
    assert augmented_head_dim(96, (1, 14, 14), temporal=False) == 128  # image models have no temporal terms
    assert augmented_head_dim(72, (1, 1, 175)) == 256  # a multiple of 8 stays as it is (the limit itself)


@pytest.mark.parametrize("name, case", [("mvitv2_tiny", "2x"), ("mvitv2_s_16x4", "ava_full_res"), ("mvitv2_t", "paper")])
def test_key_grid_arithmetic_matches_the_model(name, case, monkeypatch):
    """The arithmetic the preset check below relies on gives the model's own head sizes (a meta-device forward)."""
    with torch.device("meta"):
        model = build_model(name)
    thw = _inputs(model.cfg)[case]
    heads = [blk.attn.head_dim for blk in model.blocks]
    expected = [augmented_head_dim(h, k, model.cfg.video) for h, k in zip(heads, _key_grids(model.cfg, thw))]
    assert _head_dims_seen(model, thw, monkeypatch) == expected


@pytest.mark.parametrize("name", list_models())
def test_every_preset_stays_within_the_fused_kernels_head_size(name):
    with torch.device("meta"):
        model = build_model(name)  # shapes only: no memory, no init cost
    heads = [blk.attn.head_dim for blk in model.blocks]
    for case, thw in _inputs(model.cfg).items():
        sizes = [augmented_head_dim(h, k, model.cfg.video) for h, k in zip(heads, _key_grids(model.cfg, thw))]
        assert max(sizes) <= FUSED_HEAD_DIM_LIMIT, f"{name} at {case} {thw}: augmented head size {max(sizes)}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_preset_stays_within_the_limit_in_a_meta_forward(name, monkeypatch):
    """The same check through each model's own forward (meta device), not the arithmetic (~60 s for all presets)."""
    with torch.device("meta"):
        model = build_model(name)
    for case, thw in _inputs(model.cfg).items():
        assert max(_head_dims_seen(model, thw, monkeypatch)) <= FUSED_HEAD_DIM_LIMIT, f"{name} at {case} {thw}"


def _long_attention(height: int, device: torch.device) -> tuple[MultiScaleAttention, torch.Tensor, Grid]:
    """One head of 8 channels over a (1, height, 1) grid: kt + kh + kw = height + 2 extra dimensions, so the
    augmented head size crosses the limit cheaply (a few hundred tokens)."""
    thw = (1, height, 1)
    attn = MultiScaleAttention(8, 8, 1, thw, (1, 1, 1), (1, 1, 1), (3, 3, 3)).to(device)
    for table in (attn.rel_pos_h, attn.rel_pos_w, attn.rel_pos_t):
        torch.nn.init.trunc_normal_(table, std=0.02)
    return attn, torch.randn(2, 1 + height, 8, device=device), thw  # (B, 1+N, C)


@pytest.mark.parametrize("height, fused", [(246, True), (247, False)])  # 8 + 248 = 256 fits; 8 + 249 -> 264 does not
def test_sdpa_beyond_the_limit_takes_the_reference_path(height, fused, device, monkeypatch):
    attn, x, thw = _long_attention(height, device)
    assert (attn.augmented_head_dim(thw) <= FUSED_HEAD_DIM_LIMIT) is fused
    attn.attn_impl = "reference"
    with torch.no_grad():
        expected, _ = attn(x, thw)  # (B, 1+N, C)
    calls, sdpa = [], F.scaled_dot_product_attention

    def fused_kernel(q, k, v, **kwargs):  # stands in for a kernel that takes head sizes up to the limit
        calls.append(q.shape[-1])
        if q.shape[-1] > FUSED_HEAD_DIM_LIMIT:
            raise RuntimeError(f"head size {q.shape[-1]} > {FUSED_HEAD_DIM_LIMIT}")
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", fused_kernel)
    attn.attn_impl = "sdpa"
    with torch.no_grad():
        out, _ = attn(x, thw)
    monkeypatch.undo()
    assert calls == ([attn.augmented_head_dim(thw)] if fused else [])
    # Same math in fp32; a softmax over ~250 keys and a 258-term dot product: ~K eps relative, K = 258.
    torch.testing.assert_close(out, expected, rtol=0, atol=258 * torch.finfo(torch.float32).eps * expected.abs().max().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused CUDA kernels need a GPU")
def test_fused_cuda_kernels_run_at_the_limit_and_are_spared_beyond_it():
    """With only flash / memory-efficient attention allowed (no math fallback), a head size at the limit runs and one
    beyond it takes the reference path instead of failing with "no available kernel"."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for height in (246, 247):
        attn, x, thw = _long_attention(height, torch.device("cuda"))
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
                out, _ = attn(x, thw)
        assert out.shape == x.shape and torch.isfinite(out).all()
