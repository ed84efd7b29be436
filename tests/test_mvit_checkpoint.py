"""The official facebookresearch/mvit image checkpoint (``.pyth``) through the ``mvit`` source of ``convert.py``:
state dicts with random weights in exactly the official key layout and shapes (``official_image_shapes``, written
from the official model code, not from our model) load into the image presets and give timm's logits when timm
loads the same file through its own ``checkpoint_filter_fn``; auto-detection; an image file for a video model asks
for ``init_mode``; the ``dim_mul_in_att`` layout switch is named when a checkpoint's layout differs."""

from __future__ import annotations

import re

import pytest
import torch

from mvit_video.models import build_model
from mvit_video.models.convert import (
    CONV_KERNELS,
    TIMM_MODELS,
    CheckpointMismatchError,
    convert_state_dict,
    guess_source,
    load_pretrained,
    widens_in_attention,
)
from mvit_video.models.inflate import inflate_image_state_dict

# The official image configs (configs/MVITv2_{T,S,B}.yaml, configs/test/MVITv2_L_test.yaml) as the generator's
# arguments: stage depths, EMBED_DIM, NUM_HEADS, CLS_EMBED_ON, DIM_MUL_IN_ATT. ``_cls`` are the IN-21K layouts
# (CLS_EMBED_ON; timm's ``mvitv2_*_cls``); the tiny one is our test preset built as an image model.
OFFICIAL = {
    "mvitv2_t": dict(depths=(1, 2, 5, 2)),
    "mvitv2_s_cls": dict(depths=(1, 2, 11, 2), cls=True),
    "mvitv2_b_cls": dict(depths=(2, 3, 16, 3), cls=True),
    "mvitv2_l": dict(depths=(2, 6, 36, 4), embed_dim=144, num_heads=2, dim_mul_in_att=False),
    "mvitv2_l_cls": dict(depths=(2, 6, 36, 4), embed_dim=144, num_heads=2, cls=True),
    "tiny": dict(depths=(1, 1, 2, 1), embed_dim=32, size=64),
}


def official_image_shapes(
    depths: tuple[int, ...],
    embed_dim: int = 96,
    num_heads: int = 1,
    cls: bool = False,
    dim_mul_in_att: bool = True,
    num_classes: int = 1000,
    size: int = 224,
) -> dict[str, tuple[int, ...]]:
    """``MViT(cfg).state_dict()`` key -> shape, restated from facebookresearch/mvit ``mvit/models/mvit_model.py``
    (``MViT.__init__``, ``_prepare_mvit_configs``), ``attention.py`` (``MultiScaleAttention``, ``MultiScaleBlock``)
    and ``common.py`` (``Mlp``), with the configs' POOL_KVQ_KERNEL (3, 3), POOL_KV_STRIDE_ADAPTIVE (4, 4),
    POOL_Q_STRIDE 2 at each stage start and 1 elsewhere (every block listed), MLP_RATIO 4, QKV_BIAS, no USE_ABS_POS
    (so no ``pos_embed``), MODE conv, POOL_FIRST False, REL_POS_SPATIAL. Key order as ``state_dict()`` gives it."""
    starts = {sum(depths[:i]) for i in range(1, len(depths))}  # DIM_MUL = HEAD_MUL = [[start, 2.0], ...]
    out: dict[str, tuple[int, ...]] = {}
    if cls:
        out["cls_token"] = (1, 1, embed_dim)  # MViT.cls_token: registered on the model itself, so first
    out["patch_embed.proj.weight"] = (embed_dim, 3, 7, 7)  # PatchEmbed.proj: nn.Conv2d(3, EMBED_DIM, (7, 7))
    out["patch_embed.proj.bias"] = (embed_dim,)
    grid, kv_stride, heads, dim = size // 4, 4, num_heads, embed_dim  # PATCH_STRIDE (4, 4)
    for i in range(sum(depths)):
        stride_q = 2 if i in starts else 1
        heads *= stride_q  # round_width(num_heads, head_mul[i])
        kv_stride = max(kv_stride // stride_q, 1)  # the adaptive KV stride, divided at each q stride
        widen = (i in starts) if dim_mul_in_att else (i + 1 in starts)  # dim_mul[i] or dim_mul[i + 1]
        dim_out = 2 * dim if widen else dim  # round_width(embed_dim, 2.0, divisor=heads): exact here
        att = dim_out if dim_mul_in_att else dim  # MultiScaleBlock: att_dim
        head_dim = att // heads  # MultiScaleAttention: head_dim, and dim_conv of the pooling convs (MODE conv)
        b = f"blocks.{i}."
        out[b + "norm1.weight"] = out[b + "norm1.bias"] = (dim,)
        rel = 2 * max(grid // stride_q, grid // kv_stride) - 1  # rel_sp_dim = 2 * max(q_size, kv_size) - 1
        out[b + "attn.rel_pos_h"] = out[b + "attn.rel_pos_w"] = (rel, head_dim)  # parameters before submodules
        out[b + "attn.qkv.weight"], out[b + "attn.qkv.bias"] = (3 * att, dim), (3 * att,)
        out[b + "attn.proj.weight"], out[b + "attn.proj.bias"] = (att, att), (att,)
        for p in "qkv":  # nn.Conv2d(dim_conv, dim_conv, (3, 3), groups=dim_conv, bias=False), then its LayerNorm
            out[b + f"attn.pool_{p}.weight"] = (head_dim, 1, 3, 3)
            out[b + f"attn.norm_{p}.weight"] = out[b + f"attn.norm_{p}.bias"] = (head_dim,)
        out[b + "norm2.weight"] = out[b + "norm2.bias"] = (att,)
        out[b + "mlp.fc1.weight"], out[b + "mlp.fc1.bias"] = (4 * att, att), (4 * att,)
        out[b + "mlp.fc2.weight"], out[b + "mlp.fc2.bias"] = (dim_out, 4 * att), (dim_out,)
        if dim != dim_out:
            out[b + "proj.weight"], out[b + "proj.bias"] = (dim_out, dim), (dim_out,)
        grid //= stride_q
        dim = dim_out
    out["norm.weight"] = out["norm.bias"] = (dim,)
    out["head.projection.weight"], out["head.projection.bias"] = (num_classes, dim), (num_classes,)  # no dropout params
    return out


def random_official(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the given shapes: norm weights near 1, everything else small (std 0.02, tables 0.1), so
    the logits are O(1) and a wrong or swapped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        scale = 0.1 if "rel_pos" in key or key.endswith("bias") else 0.02
        sd[key] = torch.randn(shape, generator=g) * scale + (1.0 if ".norm" in f".{key}" and key.endswith("weight") else 0.0)
    return sd


def to_official(our_image_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our image state dict the other way round: the names are the official ones already; the convs lose their
    temporal axis of size 1 (``Conv2d`` in the official code)."""
    return {k: v.squeeze(2) if CONV_KERNELS.match(k) else v for k, v in our_image_sd.items()}


def official_file(path, sd: dict[str, torch.Tensor]) -> None:
    """What ``mvit/utils/checkpoint.py`` ``save_checkpoint`` writes (the optimizer state left out)."""
    torch.save({"epoch": 299, "model_state": sd, "cfg": "MVIT:\n  DEPTH: 10\n"}, path)


def test_the_key_list_is_our_image_model_mapped_back() -> None:
    """Two readings agree: every official name and shape written above is what our image presets give once their
    convs lose the temporal axis (the names are PySlowFast's, which the official image code shares)."""
    with torch.device("meta"):
        for preset in ("mvitv2_t", "mvitv2_s_cls", "mvitv2_b_cls", "mvitv2_l", "mvitv2_l_cls"):
            ours = {k: tuple(v.shape) for k, v in to_official(build_model(preset).state_dict()).items()}
            assert ours == official_image_shapes(**OFFICIAL[preset]), preset  # as dicts: our module order differs
        tiny = build_model("mvitv2_tiny", video=False, num_frames=1, num_classes=1000).state_dict()
    assert {k: tuple(v.shape) for k, v in to_official(tiny).items()} == official_image_shapes(**OFFICIAL["tiny"])


SLOW = pytest.mark.slow  # the class-token presets: 35M and 65M random weights, several seconds each on 2 cores


@pytest.mark.parametrize(
    "preset", ["mvitv2_t", pytest.param("mvitv2_s_cls", marks=SLOW), pytest.param("mvitv2_b_cls", marks=SLOW)]
)
def test_official_file_gives_timms_logits(preset: str) -> None:
    """The same random official-layout weights: into our preset by ``source="mvit"``, into timm's model by timm's
    own ``checkpoint_filter_fn`` (official names -> timm's). Logits within the image parity bound of
    ``tests/test_timm_parity.py`` (1e-4, fp32), and every tensor bit-equal to what our ``timm`` source makes of
    timm's state dict. At 64^2 (the official layout for that crop: only the tables are shorter; 224^2 is checked
    by name and shape above), both models built on the meta device and given the file's tensors (a few seconds)."""
    timm = pytest.importorskip("timm")
    from timm.models.mvitv2 import checkpoint_filter_fn

    size = 64
    sd = random_official(official_image_shapes(**OFFICIAL[preset], num_classes=10, size=size))
    with torch.device("meta"):
        ref = timm.create_model(TIMM_MODELS[preset], pretrained=False, num_classes=10, img_size=size).eval()
        model = build_model(preset, num_classes=10, input_size=size).eval()
    ref.load_state_dict(checkpoint_filter_fn({"model_state": dict(sd)}, ref), strict=True, assign=True)
    ours = convert_state_dict({"model_state": sd}, "mvit", model)
    model.load_state_dict(ours, strict=True, assign=True)
    via_timm = convert_state_dict(ref.state_dict(), "timm", model)
    assert ours.keys() == via_timm.keys() and all(torch.equal(ours[k], via_timm[k]) for k in ours)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))  # (B, C, H, W)
    with torch.no_grad():
        logits, ref_logits = model(x), ref(x)  # (B, 10)
    diff = (logits - ref_logits).abs().max().item()
    print(f"{preset}: official file, ours vs timm: max abs logit diff {diff:.2e} (|logits| <= {ref_logits.abs().max():.2f})")
    assert diff <= 1e-4


def test_guess_source() -> None:
    image = random_official(official_image_shapes(**OFFICIAL["tiny"]))
    squeezed_3d = {k: v.unsqueeze(2) if v.ndim == 4 else v for k, v in image.items()}  # CHECKPOINT_SQUEEZE_TEMPORAL
    with torch.device("meta"):
        video = build_model("mvitv2_tiny").state_dict()  # PySlowFast layout: patch kernel (C, 3, 3, 7, 7)
    assert guess_source({"model_state": image, "epoch": 1}) == "mvit"
    assert guess_source({"model_state": squeezed_3d}) == "mvit"
    assert guess_source(image) == "mvit"  # a bare official state dict
    assert guess_source({"model_state": video}) == "slowfast"
    assert guess_source(video) == "slowfast"


def test_mismatch_named_key_by_key() -> None:
    sd = random_official(official_image_shapes(**OFFICIAL["tiny"], num_classes=10))
    del sd["blocks.2.attn.rel_pos_h"]
    sd["pos_embed"] = torch.zeros(1, 256, 32)  # MViTv1's absolute position embedding (USE_ABS_POS)
    sd["blocks.3.attn.pool_k.weight"] = torch.zeros(32, 1, 5, 5)
    model = build_model("mvitv2_tiny", video=False, num_frames=1, num_classes=10)
    with pytest.raises(CheckpointMismatchError) as err:
        convert_state_dict({"model_state": sd}, "mvit", model)
    assert "missing keys (1): blocks.2.attn.rel_pos_h" in str(err.value)
    assert "unexpected keys (1): pos_embed" in str(err.value)
    assert "blocks.3.attn.pool_k.weight: checkpoint (32, 1, 1, 5, 5) vs model (32, 1, 1, 3, 3)" in str(err.value)


def test_image_file_for_a_video_model_asks_for_init_mode(tmp_path) -> None:
    """Without ``init_mode`` an image file is refused, not inflated by a default: the paper's ``center`` and
    PySlowFast's ``repeat`` train differently, and the choice is the caller's."""
    official_file(tmp_path / "image.pyth", random_official(official_image_shapes(**OFFICIAL["tiny"])))
    video = build_model("mvitv2_tiny")
    before = {k: v.clone() for k, v in video.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"image model .* pass init_mode=center .* or init_mode=repeat"):
        load_pretrained(video, tmp_path / "image.pyth")
    assert all(torch.equal(v, before[k]) for k, v in video.state_dict().items())  # nothing half-loaded


@pytest.mark.parametrize("mode", ["center", "repeat"])
def test_official_class_token_file_inflates_into_the_video_model(mode: str, tmp_path) -> None:
    """The issue's end-to-end check on a small scale: an official-format file (class token, the IN-21K layout) of
    the tiny image model, auto-detected, inflated by ``load_pretrained(..., init_mode)`` exactly as our own image
    state dict is; its class token is copied, the classifier (another size) left at init."""
    image_sd = random_official(official_image_shapes(**OFFICIAL["tiny"], cls=True))
    official_file(tmp_path / "MViTv2_tiny_in21k.pyth", image_sd)
    torch.manual_seed(1)
    video = build_model("mvitv2_tiny", input_size=96)
    expected, report = inflate_image_state_dict(convert_state_dict(image_sd, "mvit"), video, mode)
    load_pretrained(video, tmp_path / "MViTv2_tiny_in21k.pyth", init_mode=mode)
    assert all(torch.equal(v, expected[k]) for k, v in video.state_dict().items())
    assert torch.equal(video.cls_token, image_sd["cls_token"]) and "cls_token" in report.copied
    assert len(report.inflated) == 1 + 3 * len(video.blocks)
    pool = video.blocks[1].attn.pool_q.weight  # (C, 1, 3, 3, 3) from the file's Conv2d (C, 1, 3, 3)
    slices = [1] if mode == "center" else [0, 1, 2]  # centre slice only, or every slice (kt = 3)
    assert all(torch.equal(pool[:, :, t], image_sd["blocks.1.attn.pool_q.weight"]) for t in slices)
    assert mode == "repeat" or not pool[:, :, [0, 2]].any()
    assert set(report.left_at_init) >= {"head.projection.weight", "head.projection.bias"}


@pytest.mark.slow
def test_real_b_in21k_file_loads_and_inflates(tmp_path) -> None:
    """The issue's end-to-end check at full size: an official-format ``MViTv2_B_in21k.pyth`` (random weights, 19168
    classes, 260 MB) loads into ``mvitv2_b_cls`` as it is and inflates into ``mvitv2_b_32x3`` in both modes."""
    sd = random_official(official_image_shapes(**OFFICIAL["mvitv2_b_cls"], num_classes=19168))
    official_file(tmp_path / "MViTv2_B_in21k.pyth", sd)
    image = load_pretrained(build_model("mvitv2_b_cls", num_classes=19168), tmp_path / "MViTv2_B_in21k.pyth")
    assert all(torch.equal(v, sd[k].reshape(v.shape)) for k, v in image.state_dict().items())
    for mode in ("center", "repeat"):
        video = load_pretrained(build_model("mvitv2_b_32x3"), tmp_path / "MViTv2_B_in21k.pyth", init_mode=mode)
        assert torch.equal(video.cls_token, sd["cls_token"]) and torch.equal(video.norm.weight, sd["norm.weight"])
        kt = video.patch_embed.proj.weight.shape[2]
        stem = video.patch_embed.proj.weight[:, :, kt // 2]  # (C, 3, 7, 7)
        assert torch.equal(stem, sd["patch_embed.proj.weight"]), mode  # the centre slice, in both modes


@pytest.mark.parametrize("mode", ["center", "repeat"])
def test_real_in21k_layouts_inflate_into_the_video_presets(mode: str) -> None:
    """Shapes only (meta tensors): the official-layout B and L class-token files (``MViTv2_{B,L}_in21k.pyth``,
    19168 classes) fill every tensor of ``mvitv2_b_32x3`` and ``mvitv2_l_40x3`` through the ``mvit`` source."""
    with torch.device("meta"):
        for image, preset in (("mvitv2_b_cls", "mvitv2_b_32x3"), ("mvitv2_l_cls", "mvitv2_l_40x3")):
            sd = {k: torch.empty(s) for k, s in official_image_shapes(**OFFICIAL[image], num_classes=19168).items()}
            video = build_model(preset)
            out, report = inflate_image_state_dict(convert_state_dict({"model_state": sd}, "mvit"), video, mode)
            assert out.keys() == video.state_dict().keys() and "cls_token" in report.copied
            assert len(report.inflated) == 1 + 3 * len(video.blocks)
            print(preset, report.summary().splitlines()[0])


def test_the_two_l_layouts_count_the_specs_parameters() -> None:
    """Spec §2.5: the shipped K400-L config (widening in attention) has 213,390,112 parameters, the same with
    DIM_MUL_IN_ATT False 217.75M (the SlowFast README says 217.6M, matching neither exactly)."""
    with torch.device("meta"):
        att, mlp = build_model("mvitv2_l_40x3"), build_model("mvitv2_l_40x3_in1k")
    assert att.cfg.dim_mul_in_att and not mlp.cfg.dim_mul_in_att
    assert sum(t.numel() for t in att.parameters()) == 213_390_112
    assert round(sum(t.numel() for t in mlp.parameters()) / 1e6, 2) == 217.75


def test_layout_switch_named_with_the_preset(tmp_path) -> None:
    """The IN-1K image L widens in the MLP: it cannot init ``mvitv2_l_40x3`` (the error names
    ``model.dim_mul_in_att`` and the preset to use) and fills ``mvitv2_l_40x3_in1k``; the same for a video
    checkpoint of one layout loaded into the other. Shapes only (meta tensors)."""
    with torch.device("meta"):
        in1k = {k: torch.empty(s) for k, s in official_image_shapes(**OFFICIAL["mvitv2_l"]).items()}
        l_att, l_mlp = build_model("mvitv2_l_40x3"), build_model("mvitv2_l_40x3_in1k")
    image_sd = convert_state_dict({"model_state": in1k}, "mvit")
    assert widens_in_attention(image_sd) is False and widens_in_attention(l_att.state_dict()) is True
    with pytest.raises(CheckpointMismatchError) as err:
        inflate_image_state_dict(image_sd, l_att, "center")
    assert "model.dim_mul_in_att=false" in str(err.value) and "model.name=mvitv2_l_40x3_in1k" in str(err.value)
    assert "blocks.2.attn.qkv.weight" in str(err.value)  # the transition blocks, named
    out, _ = inflate_image_state_dict(image_sd, l_mlp, "center")
    assert out.keys() == l_mlp.state_dict().keys()
    with pytest.raises(CheckpointMismatchError, match=r"model\.dim_mul_in_att=true .* model\.name=mvitv2_l_40x3\b"):
        convert_state_dict(l_att.state_dict(), "slowfast", l_mlp)
    tiny = build_model("mvitv2_tiny", dim_mul_in_att=False)  # no preset of this layout: the switch alone
    with pytest.raises(CheckpointMismatchError, match=r"model\.dim_mul_in_att=true \(train\.py: \+model") as err:
        convert_state_dict(build_model("mvitv2_tiny").state_dict(), "mvit_video", tiny)
    assert "model.name" not in str(err.value)

    import hydra.utils

    from .helpers import compose_cfg

    override = re.search(r"train\.py: (\S+);", str(err.value))[1]  # what the message tells the user to type
    cfg = compose_cfg(["model.name=mvitv2_tiny", "data.num_classes=4", override], tmp_path / "out", tmp_path / "data")
    assert hydra.utils.instantiate(cfg.model).cfg.dim_mul_in_att is True


def test_convert_checkpoint_script_reads_an_official_file(tmp_path) -> None:
    from .helpers import run_script

    official_file(tmp_path / "t.pyth", random_official(official_image_shapes(**OFFICIAL["mvitv2_t"], num_classes=10)))
    for source in ("auto", "mvit"):
        out = run_script("convert_checkpoint.py", tmp_path / "t.pyth", "--model", "mvitv2_t", "--source", source)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "source: mvit;" in out.stdout and "all keys and shapes match" in out.stdout
