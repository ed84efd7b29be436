"""FLOP counting with ``torch.utils.flop_counter`` in the paper's convention (one multiply-add = one FLOP).

``FlopCounterMode`` counts 2 per multiply-add for conv, linear, matmul and einsum and nothing for LayerNorm;
we halve its count and add LayerNorm as fvcore does (5 per element with affine), because that is the counter
the official numbers come from (spec §0). Softmax, GELU, pooling and additions count 0 in both. Counting runs on
the meta device, so even MViTv2-L at 40x312^2 needs no memory.
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from .mvitv2 import MViTv2


def _layer_norm_flop(input_shape, *args, **kwargs) -> int:
    return 2 * 5 * math.prod(input_shape)  # halved below, like every other op


def count_gflops(model: MViTv2, input_shape: tuple[int, ...]) -> float:
    """GFLOPs (multiply-adds) of one forward of ``model`` on a ``(1, ...)`` input, counted on meta tensors."""
    impl = model.blocks[0].attn.attn_impl
    model.set_attn_impl("reference")  # plain matmuls: counted by every torch version
    try:
        x = torch.empty(input_shape, device="meta")
        mapping = {torch.ops.aten.native_layer_norm: _layer_norm_flop}
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(x)
        return counter.get_total_flops() / 2 / 1e9
    finally:
        model.set_attn_impl(impl)
