"""bf16 autocast: both attention paths (sdpa, with the rel-pos terms folded into extra q/k dimensions, and the
explicit reference) agree with an fp64 reference within bounds set by bf16's unit roundoff, forward and backward;
Lightning's ``bf16-mixed`` trains the tiny classifier and detector with finite fp32 losses."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from torchvision.ops import roi_align

from mvit_video.models import build_model
from mvit_video.models.attention import MultiScaleAttention
from mvit_video.models.detector import ROIActionHead
from mvit_video.tasks.classification import VideoClassificationModule
from mvit_video.tasks.detection import AVADetectionModule

from .helpers import AVA_TEST_CLASSES, tiny_detector_and_batch, train_steps

U_BF16 = 2.0**-8  # bf16's unit roundoff: 8 significand bits
# Forward: the longest chain of bf16 roundings in an attention block is x, W_qkv -> qkv -> pooled q/k/v (conv) ->
# LayerNorm -> q', k' (with the folded rel-pos terms), P -> P v -> W_proj -> out: 9 roundings of at most u each,
# normwise (the kernels accumulate K-term dot products in fp32, so K does not multiply u; LayerNorm and softmax
# compute in fp32 under CPU autocast but round their outputs to bf16). Backward: the transposed chain plus the
# softmax and LayerNorm Jacobians, twice the roundings.
FORWARD_BOUND, BACKWARD_BOUND = 9 * U_BF16, 18 * U_BF16

# (dim, dim_out, heads, grid, stride_q, stride_kv): a stage-1 block (pooled keys) and a stage transition (pooled
# queries, widening, 2 heads), both with a cls token, as in the tiny model.
BLOCKS = {"stage1": (32, 32, 1, (4, 16, 16), (1, 1, 1), (1, 4, 4)), "transition": (32, 64, 2, (4, 16, 16), (1, 2, 2), (1, 2, 2))}


def _rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
@pytest.mark.parametrize("block", BLOCKS)
def test_attention_under_bf16_autocast_matches_fp64(block, impl, device):
    dim, dim_out, heads, thw, stride_q, stride_kv = BLOCKS[block]
    attn = MultiScaleAttention(dim, dim_out, heads, thw, stride_q, stride_kv, (3, 3, 3)).to(device)
    for table in (attn.rel_pos_h, attn.rel_pos_w, attn.rel_pos_t):
        torch.nn.init.normal_(table, std=0.5)  # rel-pos terms as large as the content term: the folded dims matter
    attn.attn_impl = impl
    exact = copy.deepcopy(attn).double()
    exact.attn_impl = "reference"
    x = torch.randn(2, 1 + thw[0] * thw[1] * thw[2], dim, device=device)  # (B, 1+N, dim)
    x64 = x.double().requires_grad_()
    expected, _ = exact(x64, thw)
    grad_out = torch.randn_like(expected)
    expected.backward(grad_out)

    x = x.requires_grad_()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out, _ = attn(x, thw)
    assert out.dtype == torch.bfloat16  # autocast reached the attention
    out.float().backward(grad_out.float())
    assert _rel_err(out, expected) <= FORWARD_BOUND
    assert _rel_err(x.grad, x64.grad) <= BACKWARD_BOUND
    grads = torch.cat([p.grad.flatten() for p in attn.parameters()])
    assert _rel_err(grads, torch.cat([p.grad.flatten() for p in exact.parameters()])) <= BACKWARD_BOUND
    for name in ("rel_pos_h", "rel_pos_w", "rel_pos_t"):  # each ~5% of the norm above: a lost one would hide there
        assert _rel_err(getattr(attn, name).grad, getattr(exact, name).grad) <= BACKWARD_BOUND, name


def test_roi_head_in_bf16_keeps_the_box_coordinates():
    """A bf16 detector (weights and map in bf16) pools at the boxes' exact coordinates: AVA's full-resolution inputs
    are wider than 256 px, where bf16 would round a corner by up to 1 px (2 px beyond 512). (Before, with the boxes
    cast to the map's dtype, torchvision's CPU ROIAlign refused bf16 altogether.)"""
    head = ROIActionHead(16, 3, dropout=0.0).bfloat16()
    fmap = torch.randn(1, 16, 2, 12, 20).bfloat16()  # (B, C, T, H, W): a 384 x 640 input at stride 32
    boxes = torch.tensor([[0, 301.3, 17.7, 517.9, 250.1], [0, 260.5, 100.3, 630.7, 383.2]])  # (K, 5), not bf16 values
    pooled: list[torch.Tensor] = []
    head.projection.register_forward_pre_hook(lambda m, args: pooled.append(args[0]))
    head(fmap, boxes)
    expected = roi_align(fmap.mean(dim=2).float(), boxes, 7, 1 / 32, sampling_ratio=0, aligned=True).amax(dim=(2, 3))
    assert pooled[0].dtype == torch.bfloat16
    assert _rel_err(pooled[0], expected) <= U_BF16  # the one rounding of the pooled features to bf16


def _logit_dtypes(head: torch.nn.Module) -> list[torch.dtype]:
    dtypes: list[torch.dtype] = []
    head.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    return dtypes


def test_bf16_mixed_trains_the_tiny_classifier(device):
    net = build_model("mvitv2_tiny", num_classes=4, drop_path_rate=0.1)
    module = VideoClassificationModule(net, partial(torch.optim.AdamW, lr=1e-3), num_classes=4)
    logit_dtypes = _logit_dtypes(net.head.projection)
    batches = [{"video": torch.randn(2, 3, 8, 64, 64), "label": torch.tensor([i % 4, (i + 1) % 4])} for i in range(3)]
    losses = train_steps(module, batches, device)
    assert len(losses) == 3 and logit_dtypes == [torch.bfloat16] * 3  # autocast was on for the model
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)  # the loss itself in fp32


def test_bf16_mixed_trains_the_tiny_detector(device):
    det, batch = tiny_detector_and_batch()  # tests/test_ava_amp.py checks one step's loss against the official BCE
    module = AVADetectionModule(det, partial(torch.optim.AdamW, lr=1e-3), class_ids=AVA_TEST_CLASSES)
    logit_dtypes = _logit_dtypes(det.roi_head.projection)
    boxes = [batch["boxes"], batch["boxes"][:2], batch["boxes"]]  # the number of boxes varies by step
    batches = [dict(batch, boxes=b, labels=batch["labels"][: len(b)]) for b in boxes]
    losses = train_steps(module, batches, device)
    assert len(losses) == 3 and logit_dtypes == [torch.bfloat16] * 3
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)
