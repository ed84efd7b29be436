"""Image MViTv2 equals timm's ``mvitv2_*``: the same random weights, converted by the ``timm`` source of
``convert.py``, give the same fp32 logits (max abs diff <= 1e-4) and the same parameter count."""

import pytest
import torch

from mvit_video.models import build_model
from mvit_video.models.convert import CheckpointMismatchError, convert_state_dict, guess_source

timm = pytest.importorskip("timm")

TOL = 1e-4
# (our preset, timm's model); the fast set is T, S and S with a class token, the big ones are slow.
FAST = [("mvitv2_t", "mvitv2_tiny"), ("mvitv2_s", "mvitv2_small"), ("mvitv2_s_cls", "mvitv2_small_cls")]
SLOW = [
    ("mvitv2_b", "mvitv2_base"),
    ("mvitv2_l", "mvitv2_large"),
    ("mvitv2_b_cls", "mvitv2_base_cls"),
    ("mvitv2_l_cls", "mvitv2_large_cls"),
    ("mvitv2_h_cls", "mvitv2_huge_cls"),
]
VARIANTS = FAST + [pytest.param(*v, marks=pytest.mark.slow) for v in SLOW]


@pytest.mark.parametrize(("ours", "theirs"), VARIANTS)
def test_logits_equal_timm(ours: str, theirs: str) -> None:
    torch.manual_seed(0)
    ref = timm.create_model(theirs, pretrained=False).eval()
    sd = ref.state_dict()
    assert guess_source(sd) == "timm"
    model = build_model(ours, num_classes=ref.num_classes).eval()
    model.load_state_dict(convert_state_dict(sd, "timm", model), strict=True)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))  # (B, C, H, W)
    with torch.no_grad():
        want, got = ref(x), model(x)  # (B, num_classes) each
    diff = (got - want).abs().max().item()
    print(f"{ours} vs timm {theirs}: max abs logit diff {diff:.3e}")
    assert diff <= TOL


def test_mismatch_named_key_by_key() -> None:
    with torch.device("meta"):
        sd = timm.create_model("mvitv2_small", pretrained=False).state_dict()
        model = build_model("mvitv2_s_cls")  # the class token is missing from a cls-less checkpoint
    del sd["stages.2.blocks.3.attn.rel_pos_h"]
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(2\): cls_token, blocks\.6\.attn\.rel_pos_h"):
        convert_state_dict(sd, "timm", model)
