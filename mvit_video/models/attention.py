"""Pooling attention with decomposed relative positions (MViTv2, spec §1.5-1.6).

Two numerically equivalent paths share every tensor up to the attention itself:
``sdpa`` folds the relative-position terms into the dot product (extra dimensions of q and k) and calls
``F.scaled_dot_product_attention`` without a mask, so its fused kernels run in training as well;
``reference`` computes softmax(q k^T * scale + rel) v by hand, as the official code does. The reference
path exists for parity tests and for counting FLOPs, and ``sdpa`` falls back to it for a key grid so large that the
augmented head size (``augmented_head_dim``) would exceed what the fused kernels take (``FUSED_HEAD_DIM_LIMIT``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Grid = tuple[int, int, int]

# The largest head size of PyTorch's flash attention (CUDA): beyond it a forced flash backend fails with "no available
# kernel", and otherwise only slower kernels remain (the generic memory-efficient variant, math), where the folded
# rel-pos dimensions cost more than the explicit bias: the sdpa path takes the reference path instead.
FUSED_HEAD_DIM_LIMIT = 256


def augmented_head_dim(head_dim: int, k_thw: Grid, temporal: bool = True) -> int:
    """The head size the sdpa path gives the fused kernel: ``head_dim + kh + kw (+ kt)`` (one extra q/k dimension
    per key row, column and frame of the rel-pos terms), padded to a multiple of 8 (GPU kernels want that)."""
    kt, kh, kw = k_thw
    size = head_dim + kh + kw + (kt if temporal else 0)
    return size + (-size % 8)


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resize a ``[L, C]`` table to ``[length, C]`` (align_corners=False, as the official code)."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear")  # (1, C, length)
    return resized.squeeze(0).t()  # (length, C)


def _rel_index(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Index ``[q_len, k_len]`` into a ``2*max(q,k)-1`` table with the q/k ratio formula (spec §1.6)."""
    q_ratio = max(k_len / q_len, 1.0)
    k_ratio = max(q_len / k_len, 1.0)
    dist = torch.arange(q_len, device=device)[:, None] * q_ratio - torch.arange(k_len, device=device)[None, :] * k_ratio
    dist = dist + (k_len - 1) * k_ratio
    return dist.long()  # truncation; all values are >= 0


def rel_pos_parts(
    q: torch.Tensor, q_thw: Grid, k_thw: Grid, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, rel_pos_t: torch.Tensor | None
) -> list[torch.Tensor]:
    """The decomposed relative-position terms, one per axis: ``q (B, Nq, heads, C)`` (pooled, normalised,
    unscaled patch queries) -> ``[(B, Nq, heads, kh), (B, Nq, heads, kw)(, (B, Nq, heads, kt))]``. The bias of
    query i and key j is ``h_term[i, h(j)] + w_term[i, w(j)] + t_term[i, t(j)]``."""
    qt, qh, qw = q_thw
    kt, kh, kw = k_thw
    b, _, n, c = q.shape
    r_q = q.reshape(b, qt, qh, qw, n, c)
    r_h = resize_rel_pos(rel_pos_h, 2 * max(qh, kh) - 1)[_rel_index(qh, kh, q.device)]  # (qh, kh, C)
    r_w = resize_rel_pos(rel_pos_w, 2 * max(qw, kw) - 1)[_rel_index(qw, kw, q.device)]  # (qw, kw, C)
    parts = [
        torch.einsum("bthwnc,hkc->bthwnk", r_q, r_h).reshape(b, -1, n, kh),  # (B, Nq, n, kh)
        torch.einsum("bthwnc,wkc->bthwnk", r_q, r_w).reshape(b, -1, n, kw),  # (B, Nq, n, kw)
    ]
    if rel_pos_t is not None:
        r_t = resize_rel_pos(rel_pos_t, 2 * max(qt, kt) - 1)[_rel_index(qt, kt, q.device)]  # (qt, kt, C)
        parts.append(torch.einsum("bthwnc,tkc->bthwnk", r_q, r_t).reshape(b, -1, n, kt))  # (B, Nq, n, kt)
    return parts


def rel_pos_bias(parts: list[torch.Tensor], k_thw: Grid) -> torch.Tensor:
    """The per-axis terms of ``rel_pos_parts`` summed into the patch-patch bias ``(B, heads, Nq, Nk)`` of the
    attention matrix (the reference path; the SDPA path never builds it)."""
    kt, kh, kw = k_thw
    parts = [p.transpose(1, 2) for p in parts]  # (B, n, Nq, k*)
    b, n, nq, _ = parts[0].shape
    bias = parts[0][..., None, :, None] + parts[1][..., None, None, :]  # (B, n, Nq, 1, kh, kw)
    if len(parts) == 3:
        bias = bias + parts[2][..., :, None, None]  # (B, n, Nq, kt, kh, kw)
    else:
        bias = bias.expand(b, n, nq, kt, kh, kw)
    return bias.reshape(b, n, nq, kt * kh * kw)


def _key_one_hots(k_thw: Grid, temporal: bool, has_cls: bool, device, dtype) -> torch.Tensor:
    """``(1+Nk, kh+kw[+kt])``: each key's h, w (and t) position one-hot; zeros for the cls key."""
    kt, kh, kw = k_thw
    t, h, w = torch.meshgrid(
        torch.arange(kt, device=device), torch.arange(kh, device=device), torch.arange(kw, device=device), indexing="ij"
    )
    cols = [F.one_hot(h.flatten(), kh), F.one_hot(w.flatten(), kw)] + ([F.one_hot(t.flatten(), kt)] if temporal else [])
    onehot = torch.cat(cols, 1).to(dtype)  # (Nk, kh+kw[+kt])
    return F.pad(onehot, (0, 0, 1, 0)) if has_cls else onehot


class _DepthwiseConv3dCPU(torch.autograd.Function):
    """A depthwise 3-D conv whose input gradient is itself a depthwise conv (flipped kernel over the gradient, with
    zeros between its samples for strided pooling). On CPU that is 2-6x faster than the generic
    ``convolution_backward``, which dominated the pooling layers' backward in training. Odd kernels with
    ``padding = kernel // 2`` only (the only kind MViTv2 uses)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: Grid, padding: Grid) -> torch.Tensor:
        out = F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])
        # Under autocast the conv ran in out.dtype: the backward computes in it too, outside autocast.
        ctx.save_for_backward(x.to(out.dtype), weight.to(out.dtype))
        ctx.stride, ctx.padding, ctx.dtypes = stride, padding, (x.dtype, weight.dtype)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last_3d)
        groups, grad_x, grad_w = weight.shape[0], None, None
        if ctx.needs_input_grad[0]:
            if math.prod(ctx.stride) > 1:  # output sample o came from input position o * stride
                spread = grad.new_zeros(x.shape).contiguous(memory_format=torch.channels_last_3d)
                st, sh, sw = ctx.stride
                spread[:, :, ::st, ::sh, ::sw] = grad
            else:
                spread = grad
            grad_x = F.conv3d(spread, weight.flip(2, 3, 4), None, 1, ctx.padding, 1, groups)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad, x, weight, None, ctx.stride, ctx.padding, (1, 1, 1), False, (0, 0, 0), groups, (False, True, False)
            )[1]
        grad_x = grad_x.to(ctx.dtypes[0]) if grad_x is not None else None
        grad_w = grad_w.to(ctx.dtypes[1]) if grad_w is not None else None
        return grad_x, grad_w, None, None


def depthwise_conv3d(x: torch.Tensor, weight: torch.Tensor, stride: Grid, padding: Grid) -> torch.Tensor:
    """``F.conv3d(x, weight, stride=stride, padding=padding, groups=channels)``, with the faster backward on CPU."""
    fast = all(k % 2 == 1 and p == k // 2 for k, p in zip(weight.shape[2:], padding))
    if fast and x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _DepthwiseConv3dCPU.apply(x, weight, stride, padding)
    return F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])


# The pooling convs' input layout per device. CPU: channels-last, which our depthwise backward is fast in. CUDA:
# NCDHW, because cuDNN computes a channels-last depthwise 3-D weight gradient in bf16 with one small kernel per
# slice (18,720 launches in one MViTv2-S step): a bf16 training step was slower than fp32 until this (the H200
# measurements before and after are in docs/benchmarks.md, GPU section).
POOL_LAYOUT = {"cpu": torch.channels_last_3d}


class MultiScaleAttention(nn.Module):
    """Pooling attention: project to q, k, v, pool each with a depthwise conv + LayerNorm, attend.

    One conv weight ``[head_dim, 1, kt, kh, kw]`` is shared by all heads. Tensors stay token-major,
    ``(B, tokens, heads, head_dim)``, from the qkv projection to the output projection: the pooling convs see the
    heads as channels (channels-last on CPU, ``POOL_LAYOUT``; the weight repeated per head), SDPA takes the heads
    as a strided dimension, and no per-head permute is copied on CPU, forward or backward.
    Residual pooling adds the pooled query to the output (the cls position excluded).
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        input_size: Grid,
        stride_q: Grid,
        stride_kv: Grid,
        kernel: Grid,
        qkv_bias: bool = True,
        has_cls: bool = True,
        rel_pos_temporal: bool = True,
        residual_cls: bool = False,
    ) -> None:
        super().__init__()
        if dim_out % num_heads:
            raise ValueError(f"dim_out={dim_out} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dim_out = dim_out
        self.head_dim = head_dim = dim_out // num_heads
        self.scale = head_dim**-0.5
        self.has_cls = has_cls
        self.residual_cls = has_cls and residual_cls
        self.attn_impl = "sdpa"

        self.qkv = nn.Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        padding = tuple(k // 2 for k in kernel)

        def pool(stride: Grid) -> nn.Conv3d:
            return nn.Conv3d(head_dim, head_dim, kernel, stride, padding, groups=head_dim, bias=False)

        self.pool_q, self.pool_k, self.pool_v = pool(stride_q), pool(stride_kv), pool(stride_kv)
        self.norm_q = nn.LayerNorm(head_dim, eps=1e-6)
        self.norm_k = nn.LayerNorm(head_dim, eps=1e-6)
        self.norm_v = nn.LayerNorm(head_dim, eps=1e-6)

        # Tables are sized from the floor-tracked grid and the H stride (spec §1.6, pitfall 4).
        size = input_size[1]
        q_size, kv_size = size // stride_q[1], size // stride_kv[1]
        rel_sp = 2 * max(q_size, kv_size) - 1
        self.rel_pos_h = nn.Parameter(torch.zeros(rel_sp, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(rel_sp, head_dim))
        self.rel_pos_t = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim)) if rel_pos_temporal else None

    def _pool(self, x: torch.Tensor, pool: nn.Conv3d, norm: nn.LayerNorm, thw: Grid) -> tuple[torch.Tensor, Grid]:
        """``(B, [1+]N, n, C)`` -> pooled ``(B, [1+]N', n, C)``; the norm covers the cls token too."""
        b, length, n, c = x.shape
        # split, not slicing: its backward is a concatenation, not a zero-filled buffer per piece
        cls, x = x.split([1, length - 1], dim=1) if self.has_cls else (None, x)
        x = x.reshape(b, *thw, n * c).permute(0, 4, 1, 2, 3)  # (B, n*C, T, H, W), a channels-last view
        x = x.contiguous(memory_format=POOL_LAYOUT.get(x.device.type, torch.contiguous_format))
        # (n*C, 1, kt, kh, kw): channel h*C + c uses weight c. expand + reshape, not repeat: its backward sums over
        # the heads into a fresh, contiguous gradient, where repeat passed the conv's channels-last weight gradient
        # through for one head (DDP: "grad strides do not match bucket view strides", a copy per bucket every step)
        weight = pool.weight.expand(n, *pool.weight.shape).reshape(n * c, *pool.weight.shape[1:])
        x = depthwise_conv3d(x, weight, pool.stride, pool.padding)  # (B, n*C, T', H', W')
        new_thw = (x.shape[2], x.shape[3], x.shape[4])
        x = x.permute(0, 2, 3, 4, 1).reshape(b, -1, n, c)  # (B, N', n, C), a view when the conv kept channels-last
        if cls is not None:
            x = torch.cat((cls, x), dim=1)
        return norm(x), new_thw

    def pooled_qkv(self, x: torch.Tensor, thw: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Grid, Grid]:
        """``x (B, L, dim)`` -> pooled, normalised ``q (B, [1+]Nq, n, C)``, ``k``, ``v (B, [1+]Nk, n, C)`` and the
        q and k grids."""
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).unbind(2)  # each (B, L, n, C)
        q, q_thw = self._pool(q, self.pool_q, self.norm_q, thw)
        k, k_thw = self._pool(k, self.pool_k, self.norm_k, thw)
        v, _ = self._pool(v, self.pool_v, self.norm_v, thw)
        return q, k, v, q_thw, k_thw

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor, q_thw: Grid, k_thw: Grid) -> torch.Tensor:
        """softmax(q k^T * scale + rel) ``(B, n, [1+]Nq, [1+]Nk)`` from ``pooled_qkv``'s q and k, computed
        explicitly as the official code does (the reference path; also for looking at attention maps)."""
        sp = 1 if self.has_cls else 0
        parts = rel_pos_parts(q[:, sp:], q_thw, k_thw, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t)
        attn = (q.transpose(1, 2) * self.scale) @ k.permute(0, 2, 3, 1)  # (B, n, [1+]Nq, [1+]Nk)
        rel = rel_pos_bias(parts, k_thw)  # (B, n, Nq, Nk)
        attn = torch.cat((attn[:, :, :sp], torch.cat((attn[:, :, sp:, :sp], attn[:, :, sp:, sp:] + rel), -1)), 2)
        return attn.softmax(dim=-1)

    def augmented_head_dim(self, k_thw: Grid) -> int:
        """The fused kernel's head size for keys on the ``k_thw`` grid (module function ``augmented_head_dim``)."""
        return augmented_head_dim(self.head_dim, k_thw, self.rel_pos_t is not None)

    def forward(self, x: torch.Tensor, thw: Grid) -> tuple[torch.Tensor, Grid]:
        b = x.shape[0]
        q, k, v, q_thw, k_thw = self.pooled_qkv(x, thw)  # (B, [1+]N, n, C) each
        sp = 1 if self.has_cls else 0
        q_patch = q.split([sp, q.shape[1] - sp], dim=1)[1]  # (B, Nq, n, C) without cls
        if self.attn_impl not in ("sdpa", "reference"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'reference', got {self.attn_impl!r}")
        aug_dim = self.augmented_head_dim(k_thw)
        if self.attn_impl == "sdpa" and aug_dim <= FUSED_HEAD_DIM_LIMIT:
            # The decomposed bias as extra dimensions of the dot product: q gains its per-axis terms, k the one-hot
            # of its h, w, t position, so q'.k' = scale * q.k + bias, with no (Nq x Nk) mask to build. Without a
            # mask that needs a gradient, the fused attention kernels run in training too (about 1.2x faster).
            parts = rel_pos_parts(q_patch, q_thw, k_thw, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t)
            align = aug_dim - self.head_dim - sum(t.shape[-1] for t in parts)  # zero columns up to a multiple of 8
            terms = F.pad(torch.cat(parts, -1), (0, align, 0, 0, sp, 0))  # (B, [1+]Nq, n, E), 0 for the cls query
            q_aug = torch.cat([q * self.scale, terms.to(q.dtype)], -1)  # (B, [1+]Nq, n, C+E)
            onehot = _key_one_hots(k_thw, self.rel_pos_t is not None, self.has_cls, k.device, k.dtype)
            onehot = F.pad(onehot, (0, align))[:, None]  # (1+Nk, 1, E)
            k_aug = torch.cat([k, onehot.expand(b, -1, k.shape[2], -1)], -1)  # (B, [1+]Nk, n, C+E)
            v_pad = F.pad(v, (0, terms.shape[-1]))  # the fused kernels want one head size for q, k and v
            out = F.scaled_dot_product_attention(
                q_aug.transpose(1, 2), k_aug.transpose(1, 2), v_pad.transpose(1, 2), scale=1.0
            )  # (B, n, [1+]Nq, C+E), heads as a strided dimension
            out = out.transpose(1, 2).split([self.head_dim, terms.shape[-1]], dim=-1)[0]  # (B, [1+]Nq, n, C)
        else:  # the reference path, also sdpa's beyond the fused kernels' head size (a Python int: no graph break)
            out = (self.attention_weights(q, k, q_thw, k_thw) @ v.transpose(1, 2)).transpose(1, 2)  # (B, [1+]Nq, n, C)

        # Residual pooling: the pooled, normalised q is added to every patch position; to the cls position too in
        # the official image models (facebookresearch/mvit, timm), not in PySlowFast's video models.
        out = out + (q if self.residual_cls else F.pad(q_patch, (0, 0, 0, 0, sp, 0)))  # (B, [1+]Nq, n, C)
        return self.proj(out.reshape(b, -1, self.dim_out)), q_thw  # (B, [1+]Nq, n*C)
