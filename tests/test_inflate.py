"""Image -> video inflation (``mvit_video.models.inflate``): what is copied, what is inflated, what is left at init,
and the static-clip property that justifies ``center``. Tiny models, CPU, a few seconds."""

from __future__ import annotations

import pytest
import torch

from mvit_video.models.attention import resize_rel_pos
from mvit_video.models.convert import CheckpointMismatchError
from mvit_video.models.inflate import inflate_image_state_dict
from mvit_video.models.registry import build_model

SIZE = 96  # video (and test-frame) size; the image model is built for 64, so its spatial tables are resized


def _image(**kwargs) -> torch.nn.Module:
    """The tiny preset as an image model: 2-D kernels stored with temporal size 1, no class token, no ``rel_pos_t``."""
    torch.manual_seed(0)
    return build_model("mvitv2_tiny", video=False, num_frames=1, num_classes=10, **kwargs).eval()


def _video(**kwargs) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("mvitv2_tiny", input_size=SIZE, **kwargs).eval()


@pytest.mark.parametrize("mode", ["center", "repeat"])
def test_every_tensor_is_copied_inflated_or_reported(mode: str) -> None:
    image, video = _image(), _video()
    image_sd, video_init = image.state_dict(), video.state_dict()
    sd, report = inflate_image_state_dict(image_sd, video, mode)
    video.load_state_dict(sd, strict=True)

    groups = [report.copied, report.inflated, report.resized, report.zeroed, list(report.left_at_init)]
    assert sorted(k for g in groups for k in g) == sorted(video_init), "each video tensor in exactly one group"
    for key in report.copied:  # bit for bit
        assert torch.equal(sd[key], image_sd[key]), key
    for key in report.resized:
        assert key.endswith(("rel_pos_h", "rel_pos_w")), key
        assert torch.equal(sd[key], resize_rel_pos(image_sd[key], video_init[key].shape[0])), key
    assert len(report.resized) == 2 * len(video.blocks)  # 64 -> 96 changes every spatial table
    assert sorted(report.inflated) == sorted(
        ["patch_embed.proj.weight"] + [f"blocks.{i}.attn.pool_{p}.weight" for i in range(len(video.blocks)) for p in "qkv"]
    )
    for key in report.inflated:
        kt = sd[key].shape[2]
        if mode == "center":  # the 2-D kernel in the centre slice, zeros around it
            assert torch.equal(sd[key][:, :, kt // 2 : kt // 2 + 1], image_sd[key]), key
            assert not sd[key][:, :, : kt // 2].any() and not sd[key][:, :, kt // 2 + 1 :].any(), key
        else:  # kt copies, not divided by kt
            assert torch.equal(sd[key], image_sd[key].expand_as(sd[key])), key

    tables = [f"blocks.{i}.attn.rel_pos_t" for i in range(len(video.blocks))]
    at_init = {"cls_token", "head.projection.weight", "head.projection.bias"}  # no cls; 10 vs 400 classes
    if mode == "center":
        assert report.zeroed == tables and all(not sd[k].any() for k in tables)
    else:
        assert report.zeroed == []
        at_init |= set(tables)
    assert set(report.left_at_init) == at_init
    for key in at_init:  # the video model's own initialisation, untouched
        assert torch.equal(sd[key], video_init[key]), key
    print(report.summary())


def test_2d_kernels_load_like_3d_kernels_of_temporal_size_1() -> None:
    """The official image format stores 2-D convs ``(O, I, kh, kw)``; they inflate exactly as ours ``(O, I, 1, kh, kw)``."""
    image, video = _image(), _video()
    sd3 = image.state_dict()
    sd2 = {k: v.squeeze(2) if v.ndim == 5 else v for k, v in sd3.items()}
    for mode in ("center", "repeat"):
        a, _ = inflate_image_state_dict(sd3, video, mode)
        b, report = inflate_image_state_dict(sd2, video, mode)
        assert len(report.inflated) == 1 + 3 * len(video.blocks)
        assert all(torch.equal(a[k], b[k]) for k in a)


def _inflated(image: torch.nn.Module, video: torch.nn.Module, mode: str, via: str, tmp_path) -> None:
    """Load ``image`` inflated into ``video``: from its state dict, or (``via="official_file"``) from an official
    facebookresearch/mvit ``.pyth`` of the same weights (2-D convs, ``model_state``) by ``load_pretrained`` with
    the source auto-detected, as ``train.py init_from=FILE init_mode=MODE`` does."""
    if via == "state_dict":
        sd, _ = inflate_image_state_dict(image.state_dict(), video, mode)
        video.load_state_dict(sd, strict=True)
    else:
        from mvit_video.models.convert import load_pretrained

        from .test_mvit_checkpoint import official_file, to_official

        official_file(tmp_path / "image.pyth", to_official(image.state_dict()))
        load_pretrained(video, tmp_path / "image.pyth", init_mode=mode)


@pytest.mark.parametrize("via", ["state_dict", "official_file"])
def test_center_static_clip_gives_the_image_features_per_frame(via: str, tmp_path) -> None:
    """A ``center``-inflated video model on a clip whose frames are all equal computes, per token frame, the image
    model's tokens on that frame. Why it holds: the stem and every pooling conv see only their centre temporal
    slice, so each token frame is the 2-D result on its own frame (temporal zero padding meets zero weights); the
    temporal table is zero, so a patch query scores its key equally in every frame, and T' identical copies of
    each key leave the softmax-weighted sum of values unchanged (each weight is divided by T', summed T' times);
    everything else acts per token, and the skip max-pool has temporal kernel 1. It needs two things that the
    architecture, not the weights, decides: (1) no class token: a class key is one key against T' copies of every
    patch key, so its share of each softmax shrinks with T' (an image model with one, as the IN-21K ones, differs
    too; max |diff| on this test's models: 0.27 with a class token in both, 0.07 with one in the video model
    only); (2) the same KV stride in both (the tiny preset has (1, 4, 4) like the image presets; the S/B/L video
    presets use (1, 8, 8): max |diff| 2.1 here with it)."""
    image, video = _image(), _video(cls_token=False)
    _inflated(image, video, "center", via, tmp_path)
    frames = torch.randn(2, 3, SIZE, SIZE)  # (B, 3, H, W)
    clip = frames[:, :, None].expand(-1, -1, 8, -1, -1).contiguous()  # (B, 3, 8, H, W), all frames equal
    with torch.no_grad():
        tokens_image, thw_image = image.forward_features(frames)  # (B, h*w, C)
        tokens_video, thw_video = video.forward_features(clip)  # (B, t*h*w, C)
    assert thw_video == (4, *thw_image[1:])  # temporal patch stride 2
    per_frame = tokens_video.reshape(2, thw_video[0], -1, tokens_video.shape[-1])  # (B, t, h*w, C)
    diff = (per_frame - tokens_image[:, None]).abs().max().item()
    print(f"center ({via}), static clip: max |video - image| over {thw_video[0]} token frames = {diff:.2e}")
    assert diff < 1e-5


@pytest.mark.parametrize("via", ["state_dict", "official_file"])
def test_repeat_static_clip_scales_the_stem_by_the_kernel_depth(via: str, tmp_path) -> None:
    """``repeat`` keeps the static-clip property only up to the factor kt = 3 (the temporal kernel size) in the
    stem: on a static clip the patch embedding is ``kt * W*x + b``, not ``W*x + b`` (``(kt - 1) * W*x + b`` in the
    first token frame, whose window starts in the temporal zero padding). Past the stem the factor does not cancel
    (the bias and the residual stream are not scaled), so the features of the whole model are not compared."""
    image, video = _image(), _video(cls_token=False)
    _inflated(image, video, "repeat", via, tmp_path)
    frames = torch.randn(2, 3, SIZE, SIZE)  # (B, 3, H, W)
    clip = frames[:, :, None].expand(-1, -1, 8, -1, -1).contiguous()  # (B, 3, 8, H, W)
    bias = image.patch_embed.proj.bias  # (C,)
    with torch.no_grad():
        stem_image, _ = image.patch_embed(frames[:, :, None])  # (B, h*w, C)
        stem_video, thw = video.patch_embed(clip)  # (B, t*h*w, C)
    per_frame = stem_video.reshape(2, thw[0], -1, stem_video.shape[-1])  # (B, t, h*w, C)
    kt = video.patch_embed.proj.kernel_size[0]
    expected = [(kt - 1 if t == 0 else kt) * (stem_image - bias) + bias for t in range(thw[0])]
    diff = max((per_frame[:, t] - e).abs().max().item() for t, e in enumerate(expected))
    print(f"repeat ({via}), static clip: max |video stem - factor * image stem| = {diff:.2e} (factor {kt}, {kt - 1} at t=0)")
    assert diff < 1e-5


def test_mismatched_layout_fails_naming_the_switch() -> None:
    image, video = _image(dim_mul_in_att=False), _video()
    with pytest.raises(CheckpointMismatchError, match="dim_mul_in_att") as err:
        inflate_image_state_dict(image.state_dict(), video)
    assert "blocks.1.attn.qkv.weight" in str(err.value)  # the transition block, named
    with pytest.raises(ValueError, match="mode must be one of"):
        inflate_image_state_dict(_image().state_dict(), video, "mean")


@pytest.mark.parametrize("mode", ["center", "repeat"])
def test_presets_inflate_fully(mode: str) -> None:
    """The real presets, shapes only (meta tensors, about a second): image S into the S 16x4 video preset, the
    IN-21K-layout L (``mvitv2_l_cls``: class token, widening inside attention) into the L 40x3 preset, whose class
    token it then provides, and the IN-1K image L (widening in the MLP, ``dim_mul_in_att=False``) into its layout's
    video preset ``mvitv2_l_40x3_in1k``. The IN-1K L cannot init the shipped video L: the error names the switch."""
    with torch.device("meta"):
        pairs = [
            (build_model("mvitv2_s"), build_model("mvitv2_s_16x4")),
            (build_model("mvitv2_l_cls"), build_model("mvitv2_l_40x3")),
            (build_model("mvitv2_l"), build_model("mvitv2_l_40x3_in1k")),
        ]
        image_l_in1k = pairs[2][0]
    for image, video in pairs:
        sd, report = inflate_image_state_dict(image.state_dict(), video, mode)
        assert sd.keys() == video.state_dict().keys()
        assert len(report.inflated) == 1 + 3 * len(video.blocks)
        expected = {"head.projection.weight", "head.projection.bias"}  # 1000 (or 19168) image classes vs 400
        expected |= set() if image.cls_token is not None else {"cls_token"}
        if mode == "repeat":
            expected |= {f"blocks.{i}.attn.rel_pos_t" for i in range(len(video.blocks))}
        assert set(report.left_at_init) == expected
        print(report.summary().splitlines()[0])
    with pytest.raises(CheckpointMismatchError, match=r"model\.dim_mul_in_att=false .* model\.name=mvitv2_l_40x3_in1k"):
        inflate_image_state_dict(image_l_in1k.state_dict(), pairs[1][1], mode)


def test_class_token_of_an_image_model_is_copied() -> None:
    image, video = _image(cls_token=True), _video()
    sd, report = inflate_image_state_dict(image.state_dict(), video, "repeat")
    assert "cls_token" in report.copied and "cls_token" not in report.left_at_init
    assert torch.equal(sd["cls_token"], image.state_dict()["cls_token"])


def test_headless_video_model_drops_the_image_classifier() -> None:
    sd, report = inflate_image_state_dict(_image().state_dict(), _video(num_classes=0), "center")
    assert report.dropped == ["head.projection.weight", "head.projection.bias"] and not any(k.startswith("head.") for k in sd)


@pytest.mark.parametrize("mode", ["center", "repeat"])
def test_load_pretrained_inflates_an_image_file(mode: str, tmp_path, caplog) -> None:
    """``load_pretrained(..., init_mode=mode)`` (what ``init_from=... init_mode=...`` calls) loads exactly the
    inflated state dict, and logs the report."""
    import logging

    from mvit_video.models.convert import load_pretrained

    image, video = _image(), _video()
    torch.save(image.state_dict(), tmp_path / "image.pth")
    expected, _ = inflate_image_state_dict(image.state_dict(), video, mode)
    with caplog.at_level(logging.INFO, logger="mvit_video.models.convert"):
        load_pretrained(video, tmp_path / "image.pth", source="mvit_video", init_mode=mode)
    for key, value in video.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert f"inflate ({mode})" in caplog.text and "left at init: cls_token" in caplog.text


def test_train_run_gives_init_mode_to_the_loader(tmp_path, tiny_kinetics, monkeypatch) -> None:
    """``python train.py init_from=IMAGE init_mode=center`` reaches ``load_pretrained`` with the mode."""
    import mvit_video.train as train_module

    from .helpers import compose_cfg

    seen = {}

    class Loaded(Exception):
        pass

    def fake_load(model, path, **kwargs):
        seen.update(kwargs, path=path)
        raise Loaded

    monkeypatch.setattr(train_module, "load_pretrained", fake_load)
    overrides = ["model.name=mvitv2_tiny", f"data.root={tiny_kinetics}", "data.num_classes=4", "data.synthetic=null"]
    cfg = compose_cfg([*overrides, "init_from=image.pth", "init_mode=center"], tmp_path / "out", tmp_path / "data")
    with pytest.raises(Loaded):
        train_module.run(cfg)
    assert seen == {"path": "image.pth", "strict_head": False, "init_mode": "center"}
