"""MViTv2 (Li et al., CVPR 2022) for video and images, as the official code builds it (spec §1, §3).

Image models reuse the video code with a temporal extent of 1: a ``(1, 7, 7)`` patch conv and ``(1, 3, 3)``
pooling kernels have exactly the parameters and FLOPs of their 2-D counterparts, so one implementation
serves both and the image presets reproduce the paper's counts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.utils.checkpoint
from torch import nn
from torchvision.ops import StochasticDepth

from .attention import Grid, MultiScaleAttention
from .registry import register_model


@dataclass(frozen=True)
class MViTv2Config:
    """Everything that shapes an MViTv2; a preset only states how it differs from MViTv2-S 16x4."""

    depths: tuple[int, ...] = (1, 2, 11, 2)  # blocks per stage; width and heads double at each stage change
    embed_dim: int = 96
    num_heads: int = 1
    num_classes: int = 400
    video: bool = True  # False: image model (no temporal tables, no temporal patch stride)
    cls_token: bool | None = None  # classify from a class token (else: mean of the tokens); None: as ``video``
    num_frames: int = 16  # the grid the relative-position tables are sized for; other sizes run too
    input_size: int = 224
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    kv_stride: tuple[int, int, int] = (1, 8, 8)  # adaptive KV stride of the first stage
    # Widen inside attention of the transition block (False: in the MLP of the block before; the IN-1K image L, and
    # mvitv2_l_40x3_in1k). Checkpoints of the two layouts differ in every transition block's shapes (spec §2.5).
    dim_mul_in_att: bool = True
    drop_path_rate: float = 0.0
    head_dropout: float = 0.5
    in_chans: int = 3
    # Derived in __post_init__:
    block_dims: tuple[tuple[int, int, int], ...] = field(init=False, repr=False)  # (dim_in, dim_out, heads)
    block_strides: tuple[tuple[Grid, Grid], ...] = field(init=False, repr=False)  # (stride_q, stride_kv)

    def __post_init__(self) -> None:
        for name in ("depths", "kv_stride"):  # lists from YAML (even OmegaConf's) become plain tuples
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        depth = sum(self.depths)
        transitions = {sum(self.depths[:i]) for i in range(1, len(self.depths))}
        dims, strides = [], []
        kv = list(self.kv_stride)
        heads, dim = self.num_heads, self.embed_dim
        for i in range(depth):
            stride_q: Grid = (1, 2, 2) if i in transitions else (1, 1, 1)
            if i in transitions:
                heads *= 2
                # The KV stride is divided *before* it is given to the transition block (pitfall 3).
                kv = [max(k // s, 1) for k, s in zip(kv, stride_q)]
            widen_here = (i in transitions) if self.dim_mul_in_att else (i + 1 in transitions)
            dim_out = dim * 2 if widen_here else dim
            dims.append((dim, dim_out, heads))
            strides.append((stride_q, tuple(kv)))
            dim = dim_out
        object.__setattr__(self, "block_dims", tuple(dims))
        object.__setattr__(self, "block_strides", tuple(strides))

    @property
    def has_cls(self) -> bool:
        """Video models have a class token, image models not (the official configs' default), unless set."""
        return self.video if self.cls_token is None else bool(self.cls_token)

    @property
    def residual_pool_cls(self) -> bool:
        """Whether the residual pooling adds the cls token's q to its output as well: the official image code
        (facebookresearch/mvit, and timm) does, PySlowFast's video code does not. Matters only with a cls token."""
        return not self.video

    @property
    def depth(self) -> int:
        return sum(self.depths)

    @property
    def num_features(self) -> int:
        return self.block_dims[-1][1]

    @property
    def patch_stride(self) -> Grid:
        return (2, 4, 4) if self.video else (1, 4, 4)

    @property
    def feature_stride(self) -> int:
        """Input pixels per token of the last stage: the patch stride, halved again at each stage change (32)."""
        return self.patch_stride[-1] * 2 ** (len(self.depths) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("block_dims")
        d.pop("block_strides")
        return d


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiScaleBlock(nn.Module):
    """Pre-norm block: attention (with Q pooling) and MLP, a max-pooled skip path (spec §1.4)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        input_size: Grid,
        stride_q: Grid,
        stride_kv: Grid,
        kernel: Grid,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
        has_cls: bool,
        dim_mul_in_att: bool,
        rel_pos_temporal: bool,
        residual_pool_cls: bool = False,
    ) -> None:
        super().__init__()
        self.has_cls = has_cls
        self.dim_mul_in_att = dim_mul_in_att
        att_dim = dim_out if dim_mul_in_att else dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(
            dim,
            att_dim,
            num_heads,
            input_size,
            stride_q,
            stride_kv,
            kernel,
            qkv_bias,
            has_cls,
            rel_pos_temporal,
            residual_cls=residual_pool_cls,
        )
        self.drop_path = StochasticDepth(drop_path, "row")
        self.norm2 = nn.LayerNorm(att_dim, eps=1e-6)
        self.mlp = Mlp(att_dim, int(att_dim * mlp_ratio), dim_out)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        if math.prod(stride_q) > 1:
            kernel_skip = tuple(s + 1 if s > 1 else s for s in stride_q)
            self.pool_skip = nn.MaxPool3d(kernel_skip, stride_q, tuple(k // 2 for k in kernel_skip))
        else:
            self.pool_skip = None

    def _pool_skip(self, x: torch.Tensor, thw: Grid) -> torch.Tensor:
        """Max-pool the patch tokens of ``(B, [1+]N, C)``; the cls token passes untouched."""
        if self.pool_skip is None:
            return x
        sp = 1 if self.has_cls else 0
        cls, x = x[:, :sp], x[:, sp:]
        b, _, c = x.shape
        x = x.reshape(b, *thw, c).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W), a channels-last view
        x = self.pool_skip(x.contiguous(memory_format=torch.channels_last_3d))  # (B, C, T', H', W')
        x = x.permute(0, 2, 3, 4, 1).reshape(b, -1, c)  # (B, N', C)
        return torch.cat((cls, x), dim=1)

    def forward(self, x: torch.Tensor, thw: Grid) -> tuple[torch.Tensor, Grid]:
        x_norm = self.norm1(x)  # (B, [1+]N, dim)
        x_att, thw_new = self.attn(x_norm, thw)  # (B, [1+]N', att_dim)
        if self.dim_mul_in_att and self.proj is not None:
            x = self.proj(x_norm)  # the skip projection sees the normalised input (pitfall 6)
        x = self._pool_skip(x, thw) + self.drop_path(x_att)
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)  # (B, [1+]N', dim_out)
        if not self.dim_mul_in_att and self.proj is not None:
            x = self.proj(x_norm)
        return x + self.drop_path(x_mlp), thw_new


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, video: bool) -> None:
        super().__init__()
        kernel, stride, padding = ((3, 7, 7), (2, 4, 4), (1, 3, 3)) if video else ((1, 7, 7), (1, 4, 4), (0, 3, 3))
        self.proj = nn.Conv3d(in_chans, dim, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        x = self.proj(x)  # (B, C, T', H', W')
        thw = (x.shape[2], x.shape[3], x.shape[4])
        return x.flatten(2).transpose(1, 2), thw  # (B, T'H'W', C), T-major order


class ClassifierHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(x))


class MViTv2(nn.Module):
    """MViTv2 backbone and classifier. ``forward(x)`` maps ``(B, 3, T, H, W)`` (or ``(B, 3, H, W)`` for image
    models) to logits ``(B, num_classes)``. Logits in train and eval; apply softmax yourself."""

    def __init__(self, cfg: MViTv2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.num_features = cfg.num_features
        self.feature_stride = cfg.feature_stride
        self.grad_checkpointing = False
        self.has_cls = cfg.has_cls
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.video)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if self.has_cls else None

        pt, ph, pw = cfg.patch_stride
        t = max(cfg.num_frames // pt, 1) if cfg.video else 1
        grid: Grid = (t, cfg.input_size // ph, cfg.input_size // pw)
        kernel: Grid = (3, 3, 3) if cfg.video else (1, 3, 3)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear over blocks
        self.blocks = nn.ModuleList()
        for i, ((dim, dim_out, heads), (stride_q, stride_kv)) in enumerate(zip(cfg.block_dims, cfg.block_strides)):
            self.blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    heads,
                    grid,
                    stride_q,
                    stride_kv,
                    kernel,
                    cfg.mlp_ratio,
                    cfg.qkv_bias,
                    dpr[i],
                    self.has_cls,
                    cfg.dim_mul_in_att,
                    rel_pos_temporal=cfg.video,
                    residual_pool_cls=cfg.residual_pool_cls,
                )
            )
            grid = tuple(g // s for g, s in zip(grid, stride_q))  # floor-tracked, sizes the next tables
        self.norm = nn.LayerNorm(cfg.num_features, eps=1e-6)
        self.head = ClassifierHead(cfg.num_features, cfg.num_classes, cfg.head_dropout)
        self.apply(self._init_weights)
        for blk in self.blocks:
            for name in ("rel_pos_h", "rel_pos_w", "rel_pos_t"):
                table = getattr(blk.attn, name)
                if table is not None:
                    nn.init.trunc_normal_(table, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Release-time init of the official K400 checkpoints (spec §1.9): biases 0, convs PyTorch default.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------------------------------- interface
    def set_attn_impl(self, impl: str) -> None:
        """``"sdpa"`` (default, fused) or ``"reference"`` (explicit softmax; parity and FLOP counting)."""
        if impl not in ("sdpa", "reference"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'reference', got {impl!r}")
        for blk in self.blocks:
            blk.attn.attn_impl = impl

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Names excluded from weight decay besides 1-D tensors. Official video configs decay cls and
        rel-pos tables (ZERO_DECAY_POS_CLS False, spec §1.10), so nothing extra is listed."""
        return set()

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        old = self.head.projection
        self.head.projection = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head.projection, nn.Linear):
            self._init_weights(self.head.projection)
            if isinstance(old, nn.Linear):
                self.head.projection.to(old.weight.device, old.weight.dtype)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.video:
            if x.ndim != 5:
                raise ValueError(f"expected a video batch (B, {cfg.in_chans}, T, H, W), got shape {tuple(x.shape)}")
            if x.shape[2] < 2:
                raise ValueError(f"need at least 2 frames (temporal patch stride 2), got shape {tuple(x.shape)}")
        else:
            if x.ndim == 4:
                x = x.unsqueeze(2)  # (B, C, 1, H, W)
            elif x.ndim != 5 or x.shape[2] != 1:
                raise ValueError(f"expected an image batch (B, {cfg.in_chans}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_chans:
            raise ValueError(f"expected {cfg.in_chans} channels in dim 1, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"height and width must be >= 32 (total stride 32), got shape {tuple(x.shape)}")
        return x

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """Tokens after the final norm ``(B, [1+]N, C)`` (cls first if the model has one) and their ``(T, H, W)`` grid."""
        x = self._check_input(x)
        x, thw = self.patch_embed(x)  # (B, N, C0)
        if self.cls_token is not None:
            # Expanded from (1, C0), so expand's backward sums into a fresh gradient even for B = 1; expanding the
            # (1, 1, C0) parameter itself is a no-op then, and its gradient stays a slice of the token gradient,
            # strided ((1+N)*C0, C0, 1): DDP warns "Grad strides do not match bucket view strides" and copies it strided.
            cls = self.cls_token.squeeze(0).expand(x.shape[0], -1, -1)  # (B, 1, C0)
            x = torch.cat((cls, x), dim=1)  # (B, 1+N, C0)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, thw = torch.utils.checkpoint.checkpoint(blk, x, thw, use_reentrant=False)
            else:
                x, thw = blk(x, thw)
        return self.norm(x), thw

    def forward_feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage map ``(B, C, T', H', W')`` for detection heads (cls removed after the final norm)."""
        tokens, (t, h, w) = self.forward_features(x)
        tokens = tokens[:, 1:] if self.has_cls else tokens  # (B, N, C)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, t, h, w)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.has_cls else x.mean(dim=1)  # (B, C): cls token, or mean of all tokens
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.forward_features(x)
        return self.forward_head(tokens)


# --------------------------------------------------------------------------------------------- presets
_VIDEO_S = MViTv2Config()
_VIDEO_B = replace(_VIDEO_S, depths=(2, 3, 16, 3), num_frames=32)
_VIDEO_L = replace(_VIDEO_S, depths=(2, 6, 36, 4), embed_dim=144, num_heads=2, num_frames=40, input_size=312)
_IMAGE = dict(video=False, num_frames=1, num_classes=1000, kv_stride=(1, 4, 4), head_dropout=0.0)
_IMAGE_L = replace(_VIDEO_L, input_size=224, **_IMAGE)
_IMAGE_H = replace(_IMAGE_L, depths=(4, 8, 60, 8), embed_dim=192, num_heads=3)


def _build(base: MViTv2Config, **overrides) -> MViTv2:
    return MViTv2(replace(base, **overrides))


@register_model
def mvitv2_tiny(**kwargs) -> MViTv2:
    """A 4-stage, 5-block MViTv2 for tests and CPU demos: 8x64^2 input, every mechanism of the big ones."""
    base = replace(_VIDEO_S, depths=(1, 1, 2, 1), embed_dim=32, num_frames=8, input_size=64, kv_stride=(1, 4, 4))
    return _build(base, **kwargs)


@register_model
def mvitv2_s_16x4(**kwargs) -> MViTv2:
    """MViTv2-S, 16 frames x 224^2 (parameters and GFLOPs per view: ``mvit_video.recipes.PAPER``)."""
    return _build(_VIDEO_S, **kwargs)


@register_model
def mvitv2_b_32x3(**kwargs) -> MViTv2:
    """MViTv2-B, 32 frames x 224^2 (parameters and GFLOPs per view: ``mvit_video.recipes.PAPER``)."""
    return _build(_VIDEO_B, **kwargs)


@register_model
def mvitv2_l_40x3(**kwargs) -> MViTv2:
    """MViTv2-L, 40 frames x 312^2 (parameters and GFLOPs per view: ``mvit_video.recipes.PAPER``)."""
    return _build(_VIDEO_L, **kwargs)


@register_model
def mvitv2_t(**kwargs) -> MViTv2:
    """Image MViTv2-T, 224^2 (the paper's size: ``mvit_video.recipes.PAPER``)."""
    return _build(replace(_VIDEO_S, depths=(1, 2, 5, 2), **_IMAGE), **kwargs)


@register_model
def mvitv2_s(**kwargs) -> MViTv2:
    """Image MViTv2-S, 224^2 (the paper's size: ``mvit_video.recipes.PAPER``)."""
    return _build(replace(_VIDEO_S, **_IMAGE), **kwargs)


@register_model
def mvitv2_b(**kwargs) -> MViTv2:
    """Image MViTv2-B, 224^2 (the paper's size: ``mvit_video.recipes.PAPER``)."""
    return _build(replace(_VIDEO_B, **_IMAGE), **kwargs)


@register_model
def mvitv2_l(**kwargs) -> MViTv2:
    """Image MViTv2-L, 224^2, widening in the MLP as its official test config does (size: ``recipes.PAPER``)."""
    return _build(replace(_IMAGE_L, dim_mul_in_att=False), **kwargs)


@register_model
def mvitv2_h(**kwargs) -> MViTv2:
    """Image MViTv2-H, 224^2: the layout of ``mvitv2_h_cls`` (the IN-21K checkpoint's) without the class token."""
    return _build(_IMAGE_H, **kwargs)


# The class-token variants: the official IN-21K image configs (CLS_EMBED_ON) and timm's ``mvitv2_*_cls``.
# Their L widens inside attention, unlike the IN-1K ``mvitv2_l``; the classifier reads the class token.
@register_model
def mvitv2_s_cls(**kwargs) -> MViTv2:
    """Image MViTv2-S with a class token, 224^2 (timm ``mvitv2_small_cls``; size: ``recipes.PAPER``)."""
    return _build(replace(_VIDEO_S, **_IMAGE, cls_token=True), **kwargs)


@register_model
def mvitv2_b_cls(**kwargs) -> MViTv2:
    """Image MViTv2-B with a class token, 224^2 (``MViTv2_B_in21k.pyth``; size: ``recipes.PAPER``)."""
    return _build(replace(_VIDEO_B, **_IMAGE, cls_token=True), **kwargs)


@register_model
def mvitv2_l_cls(**kwargs) -> MViTv2:
    """Image MViTv2-L with a class token, 224^2 (``MViTv2_L_in21k.pyth``; size: ``recipes.PAPER``)."""
    return _build(replace(_IMAGE_L, cls_token=True), **kwargs)


@register_model
def mvitv2_h_cls(**kwargs) -> MViTv2:
    """Image MViTv2-H with a class token, 224^2 (``MViTv2_H_in21k.pyth``; size: ``recipes.PAPER``)."""
    return _build(replace(_IMAGE_H, cls_token=True), **kwargs)


# The layout switch (``dim_mul_in_att``, spec §2.5): the shipped video L widens inside attention (213.39M), as the
# IN-21K image L does; the IN-1K image L widens in the MLP (217.75M as a video model: the size the SlowFast README's
# K400-L row, 217.6M, is closest to). A checkpoint of one layout cannot init the other (every transition block's
# shapes differ); convert.check_fits names the twin preset below when a load fails on this.
@register_model
def mvitv2_l_40x3_in1k(**kwargs) -> MViTv2:
    """MViTv2-L 40x3 in the layout of the IN-1K image L (``MViTv2_L_in1k.pyth``, timm ``mvitv2_large``): widening
    in the MLP (``dim_mul_in_att=False``), 217,747,696 parameters, 2905.3 GFLOPs per view (400 classes). An IN-21K
    init (``MViTv2_L_in21k.pyth``, ``mvitv2_l_cls``) needs ``mvitv2_l_40x3`` instead."""
    return _build(replace(_VIDEO_L, dim_mul_in_att=False), **kwargs)


LAYOUT_TWINS = {"mvitv2_l_40x3": "mvitv2_l_40x3_in1k", "mvitv2_l_40x3_in1k": "mvitv2_l_40x3"}  # preset -> other layout
