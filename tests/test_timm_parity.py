"""Image MViTv2 equals timm's ``mvitv2_*``: the same random weights, converted by the ``timm`` source of
``convert.py``, give the same fp32 logits (max abs diff <= 1e-4) for every variant in ``TIMM_MODELS``."""

import pytest
import torch

from mvit_video.models import build_model
from mvit_video.models.convert import TIMM_MODELS, CheckpointMismatchError, convert_state_dict, guess_source, timm_logit_diff

timm = pytest.importorskip("timm")

TOL = 1e-4
FAST = {"mvitv2_t", "mvitv2_s", "mvitv2_s_cls"}  # ~1 s each on 2 cores; B 2-5 s, L ~20 s, H ~40 s
VARIANTS = [p if p in FAST else pytest.param(p, marks=pytest.mark.slow) for p in TIMM_MODELS]


@pytest.mark.parametrize("preset", VARIANTS)
def test_logits_equal_timm(preset: str) -> None:
    diff = timm_logit_diff(preset)
    print(f"{preset} vs timm {TIMM_MODELS[preset]}: max abs logit diff {diff:.3e}")
    assert diff <= TOL


def test_mismatch_named_key_by_key() -> None:
    with torch.device("meta"):
        sd = timm.create_model("mvitv2_small", pretrained=False).state_dict()
        model = build_model("mvitv2_s_cls")  # the class token is missing from a cls-less checkpoint
    assert guess_source(sd) == "timm"
    del sd["stages.2.blocks.3.attn.rel_pos_h"]
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(2\): cls_token, blocks\.6\.attn\.rel_pos_h"):
        convert_state_dict(sd, "timm", model)


def test_model_report_prints_timm_parity() -> None:
    from .helpers import run_script

    out = run_script("model_report.py", "--only", "mvitv2_t", "--timm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mvitv2_tiny" in out.stdout and "all within 0.0001 of timm" in out.stdout
