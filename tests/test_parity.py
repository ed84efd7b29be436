"""Numerical parity with torchvision's mvit_v2_s (random weights, nothing downloaded) and size transfer."""

import copy

import pytest
import torch
from torchvision.models.video import mvit_v2_s

from mvit_video.models import build_model
from mvit_video.models.convert import convert_state_dict, load_pretrained


@pytest.fixture(scope="module")
def tv_and_ours():
    torch.manual_seed(0)
    tv = mvit_v2_s().eval()
    ours = build_model("mvitv2_s_16x4").eval()
    ours.load_state_dict(convert_state_dict(tv.state_dict(), "torchvision", ours))
    return tv, ours


def test_torchvision_logits_match(tv_and_ours, device):
    # copies on cuda: the module-scoped models stay on the CPU for the other tests
    tv, ours = (m if device.type == "cpu" else copy.deepcopy(m).to(device) for m in tv_and_ours)
    x = torch.randn(1, 3, 16, 224, 224).to(device)
    with torch.no_grad():
        expected = tv(x)
        got = ours(x)
        ours.set_attn_impl("reference")
        ref = ours(x)
        ours.set_attn_impl("sdpa")
    assert (got - expected).abs().max() <= 1e-4
    assert (ref - expected).abs().max() <= 1e-4


def test_slowfast_pyth_roundtrip_and_larger_input(tv_and_ours, tmp_path):
    _, ours = tv_and_ours
    pyth = tmp_path / "MViTv2_S_16x4_k400.pyth"
    torch.save({"model_state": {f"module.{k}": v for k, v in ours.state_dict().items()}, "epoch": 200}, pyth)
    big = build_model("mvitv2_s_16x4", num_frames=32, input_size=256).eval()
    load_pretrained(big, pyth, source="slowfast")
    assert big.blocks[0].attn.rel_pos_t.shape[0] == 31 and big.blocks[0].attn.rel_pos_h.shape[0] == 127
    with torch.no_grad():
        out = big(torch.randn(1, 3, 32, 256, 256))
    assert out.shape == (1, 400) and torch.isfinite(out).all()
