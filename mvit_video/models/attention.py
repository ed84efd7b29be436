"""Pooling attention with decomposed relative positions (MViTv2, spec §1.5-1.6).

Two numerically equivalent paths share every tensor up to the attention itself:
``sdpa`` folds the relative-position terms into the dot product (extra dimensions of q and k) and calls
``F.scaled_dot_product_attention`` without a mask, so its fused kernels run in training as well;
``reference`` computes softmax(q k^T * scale + rel) v by hand, as the official code does. The reference
path exists for parity tests and for counting FLOPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Grid = tuple[int, int, int]


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
    q: torch.Tensor,
    q_thw: Grid,
    k_thw: Grid,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    rel_pos_t: torch.Tensor | None,
) -> list[torch.Tensor]:
    """The decomposed relative-position terms, one per axis: ``q (B, heads, Nq, C)`` (pooled, normalised,
    unscaled patch queries) -> ``[(B, heads, Nq, kh), (B, heads, Nq, kw)(, (B, heads, Nq, kt))]``. The bias of
    query i and key j is ``h_term[i, h(j)] + w_term[i, w(j)] + t_term[i, t(j)]``."""
    qt, qh, qw = q_thw
    kt, kh, kw = k_thw
    b, n, _, c = q.shape
    r_q = q.reshape(b, n, qt, qh, qw, c)
    r_h = resize_rel_pos(rel_pos_h, 2 * max(qh, kh) - 1)[_rel_index(qh, kh, q.device)]  # (qh, kh, C)
    r_w = resize_rel_pos(rel_pos_w, 2 * max(qw, kw) - 1)[_rel_index(qw, kw, q.device)]  # (qw, kw, C)
    parts = [
        torch.einsum("bnthwc,hkc->bnthwk", r_q, r_h).reshape(b, n, -1, kh),  # (B, n, Nq, kh)
        torch.einsum("bnthwc,wkc->bnthwk", r_q, r_w).reshape(b, n, -1, kw),  # (B, n, Nq, kw)
    ]
    if rel_pos_t is not None:
        r_t = resize_rel_pos(rel_pos_t, 2 * max(qt, kt) - 1)[_rel_index(qt, kt, q.device)]  # (qt, kt, C)
        parts.append(torch.einsum("bnthwc,tkc->bnthwk", r_q, r_t).reshape(b, n, -1, kt))  # (B, n, Nq, kt)
    return parts


def rel_pos_bias(parts: list[torch.Tensor], k_thw: Grid) -> torch.Tensor:
    """The per-axis terms of ``rel_pos_parts`` summed into the patch-patch bias ``(B, heads, Nq, Nk)`` of the
    attention matrix (the reference path; the SDPA path never builds it)."""
    kt, kh, kw = k_thw
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


class MultiScaleAttention(nn.Module):
    """Pooling attention: project to q, k, v, pool each with a depthwise conv + LayerNorm, attend.

    One conv weight ``[head_dim, 1, kt, kh, kw]`` is shared by all heads (heads are folded into the batch).
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
    ) -> None:
        super().__init__()
        if dim_out % num_heads:
            raise ValueError(f"dim_out={dim_out} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dim_out = dim_out
        self.head_dim = head_dim = dim_out // num_heads
        self.scale = head_dim**-0.5
        self.has_cls = has_cls
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
        """``(B, n, [1+]N, C)`` -> pooled ``(B, n, [1+]N', C)``; the norm covers the cls token too."""
        b, n, length, c = x.shape
        # split, not slicing: its backward is a concatenation, not a zero-filled buffer per piece
        cls, x = x.split([1, length - 1], dim=2) if self.has_cls else (None, x)
        x = x.reshape(b * n, *thw, c).permute(0, 4, 1, 2, 3)  # (B*n, C, T, H, W)
        x = pool(x)  # (B*n, C, T', H', W')
        new_thw = (x.shape[2], x.shape[3], x.shape[4])
        x = x.flatten(2).transpose(1, 2).reshape(b, n, -1, c)  # (B, n, N', C)
        if cls is not None:
            x = torch.cat((cls, x), dim=2)
        return norm(x), new_thw

    def forward(self, x: torch.Tensor, thw: Grid) -> tuple[torch.Tensor, Grid]:
        b, length, _ = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, n, L, C)
        q, q_thw = self._pool(q, self.pool_q, self.norm_q, thw)
        k, k_thw = self._pool(k, self.pool_k, self.norm_k, thw)
        v, _ = self._pool(v, self.pool_v, self.norm_v, thw)

        sp = 1 if self.has_cls else 0
        q_patch = q.split([sp, q.shape[2] - sp], dim=2)[1]  # (B, n, Nq, C) without cls
        parts = rel_pos_parts(q_patch, q_thw, k_thw, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t)
        if self.attn_impl == "sdpa":
            # The decomposed bias as extra dimensions of the dot product: q gains its per-axis terms, k the one-hot
            # of its h, w, t position, so q'.k' = scale * q.k + bias, with no (Nq x Nk) mask to build. Without a
            # mask that needs a gradient, the fused attention kernels run in training too (about 1.2x faster).
            extra = sum(t.shape[-1] for t in parts)
            align = -(self.head_dim + extra) % 8  # zero columns: GPU kernels want head sizes in multiples of 8
            terms = F.pad(torch.cat(parts, -1), (0, align, sp, 0))  # (B, n, [1+]Nq, extra+align), 0 for cls query
            q_aug = torch.cat([q * self.scale, terms.to(q.dtype)], -1)
            onehot = _key_one_hots(k_thw, self.rel_pos_t is not None, self.has_cls, k.device, k.dtype)
            onehot = F.pad(onehot, (0, align))  # (1+Nk, extra+align)
            k_aug = torch.cat([k, onehot.expand(*k.shape[:2], *onehot.shape)], -1)
            v_pad = F.pad(v, (0, terms.shape[-1]))  # the fused kernels want one head size for q, k and v
            out = F.scaled_dot_product_attention(q_aug, k_aug, v_pad, scale=1.0)
            out = out.split([self.head_dim, terms.shape[-1]], dim=-1)[0]  # (B, n, Nq, C): drop v's zero padding
        elif self.attn_impl == "reference":
            rel = rel_pos_bias(parts, k_thw)
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, n, Nq, Nk)
            attn = torch.cat((attn[:, :, :sp], torch.cat((attn[:, :, sp:, :sp], attn[:, :, sp:, sp:] + rel), -1)), 2)
            out = attn.softmax(dim=-1) @ v  # (B, n, Nq, C)
        else:
            raise ValueError(f"attn_impl must be 'sdpa' or 'reference', got {self.attn_impl!r}")

        # Residual pooling: the pooled, normalised q is added to every patch position (not to cls).
        out = out + F.pad(q_patch, (0, 0, sp, 0))  # (B, n, [1+]Nq, C)
        out = out.transpose(1, 2).reshape(b, -1, self.dim_out)  # (B, Nq, n*C)
        return self.proj(out), q_thw
