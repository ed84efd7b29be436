"""Model layer: every preset builds with the paper's parameter count (mvit_video.recipes.PAPER); tiny and S run
forward/backward."""

import pytest
import torch

from mvit_video.models import build_model, list_models
from mvit_video.models.convert import CheckpointMismatchError, convert_state_dict
from mvit_video.recipes import PAPER, params_match

VIDEO = [row for row in PAPER if isinstance(row.params, int)]  # exact counts of the official checkpoints
IMAGE = [row for row in PAPER if not isinstance(row.params, int)]  # the paper's counts, in millions


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("row", VIDEO, ids=lambda r: f"{r.preset}-{r.num_classes}")
def test_video_param_counts_exact(row):
    with torch.device("meta"):
        model = build_model(row.preset, num_classes=row.num_classes)
    assert count(model) == row.params


@pytest.mark.parametrize("row", IMAGE, ids=lambda r: r.preset)
def test_image_param_counts(row):
    with torch.device("meta"):
        model = build_model(row.preset)
    assert round(count(model) / 1e6, 2) == row.params and params_match(count(model), row.params)


def test_registry_lists_every_preset():
    assert set(list_models()) >= {"mvitv2_tiny", *(row.preset for row in PAPER)}
    with pytest.raises(KeyError, match="unknown model"):
        build_model("mvitv2_xxl")


def test_l_transition_shapes_match_released_config():
    # spec §2.5: the K400-L config widens inside attention of block 2.
    with torch.device("meta"):
        sd = build_model("mvitv2_l_40x3").state_dict()
    assert tuple(sd["blocks.2.attn.qkv.weight"].shape) == (864, 144)
    assert tuple(sd["blocks.2.proj.weight"].shape) == (288, 144)
    assert "blocks.1.proj.weight" not in sd
    # Table lengths per stage (spec §2.1): 155; 77; 37; 37 -> 17; head_dim 72 everywhere.
    lengths = [sd[f"blocks.{i}.attn.rel_pos_h"].shape for i in (0, 2, 8, 44, 45)]
    assert [tuple(s) for s in lengths] == [(155, 72), (77, 72), (37, 72), (37, 72), (17, 72)]
    assert tuple(sd["blocks.0.attn.rel_pos_t"].shape) == (39, 72)


def _forward_backward(model, x):
    out = model(x)
    out.float().pow(2).mean().backward()
    return out


@pytest.mark.parametrize(
    ("name", "shape"), [("mvitv2_tiny", (2, 3, 8, 64, 64)), ("mvitv2_s_16x4", (1, 3, 4, 64, 64)), ("mvitv2_t", (2, 3, 64, 64))]
)
def test_forward_backward_every_param_gets_grad(name, shape, device):
    model = build_model(name, num_classes=7, drop_path_rate=0.1).to(device)
    out = _forward_backward(model, torch.randn(shape).to(device))
    assert out.shape == (shape[0], 7)
    assert torch.isfinite(out).all()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient for {missing}"


def test_grad_checkpointing_identical():
    """Bit for bit on the CPU: the recompute runs the same deterministic kernels on the same inputs with the same RNG
    state (drop path draws the same masks), so the backward sees the same activations (tests/test_ddp_checkpoint.py
    checks the same under DDP)."""
    x = torch.randn(2, 3, 8, 64, 64)
    model = build_model("mvitv2_tiny", num_classes=5, drop_path_rate=0.2)
    torch.manual_seed(1)
    ref = _forward_backward(model, x)
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    out = _forward_backward(model, x)
    assert torch.equal(out, ref)
    unequal = [n for g, (n, p) in zip(ref_grads, model.named_parameters()) if not torch.equal(p.grad, g)]
    assert not unequal


@pytest.mark.parametrize("batch", [1, 2])
def test_gradients_strided_like_their_parameters(batch, device):
    """DDP copies each gradient into a bucket view strided like its parameter and compares the strides literally,
    size-1 dims too ("Grad strides do not match bucket view strides": a strided copy per bucket every step). With
    one clip per process the cls token's gradient was a slice of the token gradient: strides ((1+N)*C, C, 1); with
    one head, a pooling conv's weight gradient was the conv's channels-last one, passed through ``repeat``."""
    model = build_model("mvitv2_tiny", num_classes=3).to(device)
    model(torch.randn(batch, 3, 8, 64, 64, device=device)).sum().backward()
    bad = {n: (p.stride(), p.grad.stride()) for n, p in model.named_parameters() if p.grad.stride() != p.stride()}
    assert not bad


@pytest.mark.parametrize(
    ("kernel", "stride", "size"),
    [
        ((3, 3, 3), (1, 1, 1), (5, 9, 11)),
        ((3, 3, 3), (1, 2, 2), (5, 9, 11)),
        ((3, 3, 3), (2, 4, 3), (5, 9, 11)),
        ((1, 3, 3), (1, 8, 8), (1, 16, 17)),
    ],
)
def test_pooling_conv_gradients_equal_autograd(kernel, stride, size):
    """The CPU pooling conv's own backward (input gradient as a conv of the spread gradient) is exact."""
    import torch.nn.functional as F

    from mvit_video.models.attention import depthwise_conv3d

    torch.manual_seed(0)
    padding = tuple(k // 2 for k in kernel)
    x = torch.randn(2, 6, *size, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    w = torch.randn(6, 1, *kernel, dtype=torch.float64, requires_grad=True)
    out = depthwise_conv3d(x, w, stride, padding)
    assert out.grad_fn.name().startswith("_DepthwiseConv3dCPU")  # the custom backward, not autograd's
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, (x, w), g)
    ref = torch.autograd.grad(F.conv3d(x, w, None, stride, padding, 1, 6), (x, w), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    small = (x[:1, :2].detach().clone().requires_grad_(), w[:2].detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: depthwise_conv3d(a, b, stride, padding), small)


BF16_U = 2.0**-8  # bf16's unit roundoff: 8 significant bits


def _gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of n successive bf16 roundings."""
    return n * BF16_U / (1 - n * BF16_U)


def bf16_pooling_conv_errors() -> dict[str, dict[str, float]]:
    """Our bf16 pooling-conv backward and autograd's conv backward, both under CPU bf16 autocast, against an fp64
    reference, with the worst-case bf16 error bound of every gradient element.

    Bound. Autocast rounds x and w to bf16 (relative error <= u = 2^-8 each); the forward sums n_f = 27 products
    per output and rounds the output to bf16; whatever the order and the accumulator (bf16 or wider), Higham's
    lemma gives |o_hat - o| <= gamma(n_f + 3) A, A = sum |x||w| over the output's window. The loss sum(o^2) gives
    g = 2 o (|g_hat - g| <= gamma(n_f + 4) 2A, ``G = 2A``). The input gradient sums n_b <= 27 (kernel volume)
    terms g w, the weight gradient n_w terms g x (one per output position of the channel), each with one more
    input rounding and an output rounding; with gamma_a + gamma_b + gamma_a gamma_b <= gamma_(a+b):
        |gx_hat - gx| <= gamma(n_f + n_b + 6) * sum_j G_j |w|,   |gw_hat - gw| <= gamma(n_f + n_w + 6) * sum_j G_j |x|.
    The magnitudes are the same convolution backward, in fp64, on |x|, |w| and G. Kept small (n_w = 36) so the bound
    stays below the magnitudes."""
    import torch.nn.functional as F

    from mvit_video.models.attention import depthwise_conv3d

    gen = torch.Generator().manual_seed(0)
    stride, padding = (1, 2, 2), (1, 1, 1)
    x = torch.randn(1, 8, 4, 6, 6, generator=gen).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    w = torch.randn(8, 1, 3, 3, 3, generator=gen, requires_grad=True)
    grads = {}
    for name, conv in (("ours", depthwise_conv3d), ("autograd", lambda a, b, s, p: F.conv3d(a, b, None, s, p, 1, 8))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x, w, stride, padding)  # (1, 8, 4, 3, 3)
        assert out.dtype == torch.bfloat16 and (name == "autograd" or out.grad_fn.name().startswith("_Depthwise"))
        grads[name] = torch.autograd.grad(out.float().square().sum(), (x, w))
        assert all(g.dtype == torch.float32 for g in grads[name]), name  # fp32 gradients for fp32 leaves
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = torch.autograd.grad(F.conv3d(x64, w64, None, stride, padding, 1, 8).square().sum(), (x64, w64))
    xa, wa = x64.detach().abs().requires_grad_(), w64.detach().abs().requires_grad_()
    a = F.conv3d(xa, wa, None, stride, padding, 1, 8)  # A: (1, 8, 4, 3, 3)
    mag = torch.autograd.grad(a, (xa, wa), 2 * a.detach())  # sum G|w| per x element, sum G|x| per w element
    n_f = n_b = w[0].numel()
    n_w = a[:, 0].numel()
    bounds = (_gamma(n_f + n_b + 6) * mag[0], _gamma(n_f + n_w + 6) * mag[1])
    stats = {}
    for i, which in enumerate(("x", "w")):
        err = {k: (g[i].double() - ref[i]).abs() for k, g in grads.items()}
        stats[which] = {
            "ours_max_err": err["ours"].max().item(),
            "autograd_max_err": err["autograd"].max().item(),
            "ours_over_bound": (err["ours"] / bounds[i]).max().item(),
            "autograd_over_bound": (err["autograd"] / bounds[i]).max().item(),
            "excess_over_bound": ((err["ours"] - err["autograd"]) / bounds[i]).max().item(),
            "ours_rel_fro": (err["ours"].norm() / ref[i].norm()).item(),
            "autograd_rel_fro": (err["autograd"].norm() / ref[i].norm()).item(),
        }
    return stats


def check_bf16_pooling_conv_backward() -> dict[str, dict[str, float]]:
    """Our gradients are no worse than autograd's by more than the bf16 bound, element by element, and overall (in
    the Frobenius norm) by no more than one more bf16 rounding of the result (u)."""
    stats = bf16_pooling_conv_errors()
    for which, s in stats.items():
        assert s["ours_over_bound"] <= 1.0, (which, s)  # within the worst-case bf16 bound of the fp64 gradient
        assert s["excess_over_bound"] <= 1.0, (which, s)  # ours - autograd's error <= the bound
        assert s["ours_rel_fro"] <= s["autograd_rel_fro"] + BF16_U, (which, s)
    return stats


def test_pooling_conv_backward_under_cpu_bf16_autocast():
    """The custom backward computes in the dtype autocast gave the conv and returns fp32 gradients to fp32 leaves,
    as accurate as autograd's conv backward up to bf16 precision (bound in ``bf16_pooling_conv_errors``). Before,
    the gradients were compared with autograd's at atol 2e-2: on an AVX2-only CPU both are ~0.8 off an fp64
    reference (different kernels round differently), and the test failed there."""
    check_bf16_pooling_conv_backward()
    model = build_model("mvitv2_tiny", num_classes=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 8, 64, 64))
    logits.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_pooling_conv_bf16_backward_on_the_avx2_kernels():
    """The same check on the kernels of an AVX2-only CPU (ATen's AVX2 dispatch and oneDNN capped at AVX2), which
    round differently from the AVX-512 ones: a CI machine with AVX-512 covers both."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = "import json; from tests.test_models import check_bf16_pooling_conv_backward as c; print(json.dumps(c()))"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(json.loads(res.stdout.splitlines()[-1])) == {"x", "w"}


@pytest.mark.parametrize("name", ["mvitv2_tiny", "mvitv2_t"])
def test_sdpa_matches_reference(name, device):
    model = build_model(name, num_classes=5).eval().to(device)
    x = (torch.randn(2, 3, 8, 96, 96) if name == "mvitv2_tiny" else torch.randn(2, 3, 96, 96)).to(device)
    with torch.no_grad():
        fused = model(x)
        model.set_attn_impl("reference")
        ref = model(x)
    torch.testing.assert_close(fused, ref, rtol=0, atol=1e-5)


def test_runs_at_other_sizes_and_feature_map(device):
    model = build_model("mvitv2_tiny", num_classes=3).eval().to(device)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 12, 96, 128, device=device))  # non-square, more frames: tables resized on the fly
        fmap = model.forward_feature_map(torch.randn(1, 3, 8, 64, 64, device=device))
        tokens, thw = model.forward_features(torch.randn(1, 3, 8, 64, 64, device=device))
    assert out.shape == (1, 3)
    assert fmap.shape == (1, model.num_features, 4, 2, 2)
    assert thw == (4, 2, 2) and tokens.shape == (1, 1 + 16, model.num_features)
    assert model.forward_head(tokens, pre_logits=True).shape == (1, model.num_features)
    assert out.device.type == fmap.device.type == device.type


def test_device_fixture_runs_cuda_in_full_fp32(device):
    """The ``device`` fixture (tests/conftest.py): cuda tests run with TF32 off, and ``no_tf32`` restores the flags
    (they exist without a GPU, so the restore is checked here too)."""
    from .conftest import no_tf32

    assert torch.ones(1, device=device).device.type == device.type
    if device.type == "cuda":
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with no_tf32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_reset_classifier_and_no_weight_decay():
    model = build_model("mvitv2_tiny", num_classes=3)
    model.reset_classifier(11)
    assert model(torch.randn(1, 3, 8, 64, 64)).shape == (1, 11)
    assert isinstance(model.no_weight_decay(), set)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3, 8, 64, 64), "expected a video batch"),
        ((1, 3, 1, 64, 64), "at least 2 frames"),
        ((1, 1, 8, 64, 64), "expected 3 channels"),
        ((1, 3, 8, 16, 16), ">= 32"),
    ],
)
def test_bad_input_names_shape(shape, match):
    model = build_model("mvitv2_tiny")
    with pytest.raises(ValueError, match=match) as err:
        model(torch.randn(shape))
    assert str(tuple(shape)) in str(err.value)


def test_checkpoint_of_another_size_is_a_clear_error():
    small = build_model("mvitv2_tiny").state_dict()
    with torch.device("meta"):
        s = build_model("mvitv2_s_16x4")
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches .*patch_embed\.proj\.weight"):
        convert_state_dict(small, "slowfast", s)


def test_model_report_matches_paper():
    from .helpers import run_script

    out = run_script("model_report.py", "--only", "mvitv2_s_16x4", "mvitv2_t")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "64.46" in out.stdout and "34,537,744" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("name", "shape"), [("mvitv2_s_16x4", (1, 3, 16, 224, 224)), ("mvitv2_b", (1, 3, 224, 224))])
def test_full_size_forward_backward(name, shape):
    model = build_model(name, num_classes=10)
    model.set_grad_checkpointing(True)
    out = _forward_backward(model, torch.randn(shape))
    assert out.shape == (1, 10) and all(p.grad is not None for p in model.parameters())


def test_pooling_conv_layout_per_device(device, monkeypatch):
    """The pooling convs get channels-last input on CPU (our fast depthwise backward) and NCDHW on CUDA (cuDNN's
    channels-last depthwise 3-D weight gradient in bf16 launches one small kernel per slice; ``attention.POOL_LAYOUT``,
    measured in docs/benchmarks.md). On CPU this test passes either way; on CUDA it failed before the fix."""
    import mvit_video.models.attention as attention

    layouts = []

    def spy(x, weight, stride, padding):
        layouts.append("channels_last" if x.is_contiguous(memory_format=torch.channels_last_3d) else "ncdhw")
        assert x.is_contiguous() or layouts[-1] == "channels_last"
        return real(x, weight, stride, padding)

    real = attention.depthwise_conv3d
    monkeypatch.setattr(attention, "depthwise_conv3d", spy)
    model = build_model("mvitv2_tiny", num_classes=3).to(device)
    model(torch.randn(2, 3, 8, 64, 64, device=device)).sum().backward()
    assert layouts and set(layouts) == {"channels_last" if torch.device(device).type == "cpu" else "ncdhw"}
