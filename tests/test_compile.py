"""``torch.compile`` of the classifier and the AVA detector: one graph (``fullgraph=True``, no graph break) forward and
backward, the CPU depthwise conv's ``autograd.Function`` and activation checkpointing included; outputs and gradients
equal eager; one compile per input-shape bucket, not per step.

Shapes: compile with ``dynamic=False``. The token grids are Python ints that size the rel-pos tables and the one-hot
keys, so every (batch, frames, height, width) is one specialised graph, compiled once; a dataloader gives one or two
such buckets (train crop, the last smaller batch), and up to ``torch._dynamo.config.recompile_limit`` (8) are kept.
The detector's box count varies every step: mark dim 0 of ``boxes`` dynamic (``torch._dynamo.mark_dynamic``) and
the graph is reused for any count (one extra graph for a single box, which dynamo specialises). The tasks do both
with ``compile=True`` (``mvit_video.tasks.classification.compiled``).

Tracing dominates the cost on CPU, and it grows with the blocks, so the unmarked tests trace the ``aot_eager`` backend
(dynamo + AOT autograd, the graphs inductor would get, no code generation) on a 2-block tiny model that keeps every
mechanism of ``mvitv2_tiny``; the inductor runs are marked slow.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend

from mvit_video.models import build_model
from mvit_video.models.detector import build_ava_detector
from mvit_video.tasks.classification import VideoClassificationModule
from mvit_video.tasks.detection import AVADetectionModule

from .helpers import train_steps

# Strided and unit-stride kv pooling, q pooling in a widening transition, cls token, rel-pos: 2 blocks (tiny has 5).
COMPACT = dict(depths=(1, 1), kv_stride=(1, 2, 2))
# Compiled and eager differ only in the order of fp32 sums (fused or decomposed ops): about sqrt(K) eps per K-term
# dot product (K <= 4 * 128 here), grown through a few layers forward and twice that backward -> 1024 eps, normwise.
FP32_BOUND = 1024 * torch.finfo(torch.float32).eps


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # no graph cached by another test, none left for the next
    yield
    torch._dynamo.reset()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, bound: float = FP32_BOUND) -> None:
    """Normwise relative difference within ``bound`` (elementwise relative errors mean nothing near zero)."""
    err = (actual.double() - expected.double()).norm() / expected.double().norm()
    assert err <= bound, f"normwise relative difference {err:.3g} > {bound:.3g}"


def _grads(model: torch.nn.Module) -> torch.Tensor:
    """Every parameter's gradient, flattened into one vector (and cleared)."""
    flat = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return flat


def _classifier(device: torch.device, **overrides) -> torch.nn.Module:
    kw = dict(num_classes=5, drop_path_rate=0.0, head_dropout=0.0) | overrides  # no randomness: eager == compiled
    return build_model("mvitv2_tiny", **kw).to(device).train()


def _check_fullgraph_train_step(model: torch.nn.Module, inputs: tuple, backend: str = "aot_eager") -> Callable[..., Any]:
    """Forward + backward compiled in one graph equal eager's, output and every gradient; returns the compiled model
    (its ``counter``: the graphs compiled so far)."""
    expected = model(*inputs)
    expected.square().sum().backward()  # a loss whose gradient depends on the output
    expected_grads = _grads(model)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=False)  # fullgraph: a break is an error
    out = compiled(*inputs)
    out.square().sum().backward()
    assert counter.frame_count == 1
    _assert_close(out, expected)
    _assert_close(_grads(model), expected_grads)
    compiled.counter = counter
    return compiled


def test_classifier_compiles_in_one_graph_forward_and_backward(device):
    """In training mode, where the CPU pooling conv is a custom ``autograd.Function``, with non-reentrant activation
    checkpointing (the detector test below runs the backbone without it)."""
    model = _classifier(device, **COMPACT)
    model.set_grad_checkpointing(True)
    _check_fullgraph_train_step(model, (torch.randn(2, 3, 8, 64, 64, device=device),))  # (B, C, T, H, W)


def _detector(device: torch.device, **backbone) -> torch.nn.Module:
    net = build_model("mvitv2_tiny", num_classes=0, drop_path_rate=0.0, **backbone)
    return build_ava_detector(net, num_classes=80, dropout=0.0).to(device).train()


class _Logits(torch.nn.Module):
    """The training path of ``AVADetectionModule``: the detector's logits (no sigmoid)."""

    def __init__(self, det: torch.nn.Module) -> None:
        super().__init__()
        self.det = det

    def forward(self, video: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.det.logits(video, boxes)


BOXES = [[0, 4.0, 4.0, 40.0, 60.0], [1, 10.0, 0.0, 63.0, 30.0], [1, 0.0, 0.0, 64.0, 64.0], [0, 8.0, 8.0, 24.0, 56.0]]


def test_detector_compiles_in_one_graph_and_box_counts_reuse_it(device):
    """Backbone, ROIAlign (torchvision's op has fake kernels: no break) and head in one graph, forward and backward;
    a new number of boxes reuses the graph when ``boxes`` dim 0 is marked dynamic."""
    det = _Logits(_detector(device, **COMPACT))
    video = torch.randn(2, 3, 8, 64, 64, device=device)  # (B, C, T, H, W)
    boxes = torch.tensor(BOXES[:3], device=device)  # (K, 5)
    torch._dynamo.mark_dynamic(boxes, 0)
    compiled = _check_fullgraph_train_step(det, (video, boxes))
    for k in (2, 4, 2):  # a different number of boxes every step
        boxes = torch.tensor(BOXES[:k], device=device)
        torch._dynamo.mark_dynamic(boxes, 0)
        _assert_close(compiled(video, boxes), det(video, boxes))  # with grad: grad mode is part of the guards
    assert compiled.counter.frame_count == 1


def _detection_batches() -> list[dict]:
    """Three AVA batches with 3, 2 and 4 boxes."""
    labels = torch.zeros(len(BOXES), 80)  # (K, 80) multi-hot
    labels[0, [0, 11]] = labels[1, 4] = labels[2, 79] = labels[3, 3] = 1
    video = torch.randn(2, 3, 8, 64, 64)  # (B, C, T, H, W)
    return [{"video": video, "boxes": torch.tensor(BOXES[:k]), "labels": labels[:k]} for k in (3, 2, 4)]


def test_detection_task_trains_compiled_with_one_graph_for_any_box_count(device):
    """``AVADetectionModule(compile=...)``: steps with 3, 2 and 4 boxes train through one graph (the task marks the
    box count dynamic). Dynamo alone decides recompiles: the ``eager`` backend tells it cheaply."""
    counter = CompileCounterWithBackend("eager")
    module = AVADetectionModule(_detector(device, **COMPACT), torch.optim.AdamW, class_ids=[1, 5], compile={"backend": counter})
    losses = train_steps(module, _detection_batches(), device, "32-true")
    assert counter.frame_count == 1 and torch.isfinite(torch.stack(losses)).all()


@pytest.mark.slow
def test_detection_task_compiled_with_aot_autograd_gives_eager_losses(device):
    det = _detector(device, **COMPACT)
    optimizer = partial(torch.optim.SGD, lr=0.1)  # plain steps: the losses after an update compare too
    batches = _detection_batches()
    eager = AVADetectionModule(copy.deepcopy(det), optimizer, class_ids=[1, 5])
    expected = train_steps(eager, batches, device, "32-true")
    counter = CompileCounterWithBackend("aot_eager")
    module = AVADetectionModule(det, optimizer, class_ids=[1, 5], compile={"backend": counter})
    losses = train_steps(module, batches, device, "32-true")
    assert counter.frame_count == 1
    _assert_close(torch.stack(losses), torch.stack(expected))


def test_classification_task_compiles_the_net_only_when_asked(device):
    model = _classifier(device, depths=(1, 1)).eval()
    plain = VideoClassificationModule(model, torch.optim.AdamW, num_classes=5)  # the default: the net itself is called
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(out.shape))  # a user's hook runs
    with torch.no_grad():
        plain._score(
            plain.val_views,
            {
                "video": torch.randn(2, 3, 8, 64, 64, device=device),
                "label": torch.zeros(2, dtype=torch.long, device=device),
                "video_index": torch.arange(2, device=device),
            },
            "val",
        )
    assert plain.net_fn is None and seen == [(2, 5)]
    counter = CompileCounterWithBackend("eager")
    module = VideoClassificationModule(model, torch.optim.AdamW, num_classes=5, compile={"backend": counter})
    assert module.state_dict().keys() == VideoClassificationModule(model, torch.optim.AdamW, num_classes=5).state_dict().keys()
    x = torch.randn(2, 3, 8, 64, 64, device=device)  # (B, C, T, H, W)
    with torch.no_grad():
        _assert_close(module.net_fn(x), model(x))
    assert counter.frame_count == 1


def test_one_compile_per_shape_bucket_not_per_step(device):
    """``dynamic=False``: each input shape compiles once; steps that repeat a shape reuse its graph. Guards are
    decided by dynamo alone, so the ``eager`` backend and a 2-block model (a stage change) tell it cheaply."""
    model = _classifier(device, depths=(1, 1)).eval()
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=False)
    shapes = [(8, 64, 64), (8, 64, 64), (4, 64, 96), (8, 64, 64), (4, 64, 96), (4, 64, 96)]  # (T, H, W) per step
    with torch.no_grad():
        for t, h, w in shapes:
            compiled(torch.randn(2, 3, t, h, w, device=device))
    assert counter.frame_count == len(set(shapes))


@pytest.mark.slow
def test_classifier_without_checkpointing_compiles_in_one_graph(device):
    _check_fullgraph_train_step(_classifier(device, **COMPACT), (torch.randn(2, 3, 8, 64, 64, device=device),))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classifier", "detector"])
def test_inductor_compiles_the_models_equal_to_eager(task, device):
    """Inductor's generated kernels (fused, reordered sums), forward and backward, on the 2-block model: on the whole
    tiny model this passed too, but took 190 s (detector) and 600 s (classifier) to compile on 2 busy CPU cores."""
    video = torch.randn(2, 3, 8, 64, 64, device=device)  # (B, C, T, H, W)
    if task == "classifier":
        _check_fullgraph_train_step(_classifier(device, **COMPACT), (video,), "inductor")
    else:
        boxes = torch.tensor(BOXES, device=device)  # (K, 5)
        torch._dynamo.mark_dynamic(boxes, 0)
        _check_fullgraph_train_step(_detector(device, **COMPACT), (video, boxes), "inductor")


@pytest.mark.slow
def test_explain_reports_no_graph_break_for_the_tiny_models(device):
    """``torch._dynamo.explain`` on the whole tiny classifier and detector, training mode."""
    model = _classifier(device)
    assert torch._dynamo.explain(model)(torch.randn(2, 3, 8, 64, 64, device=device)).graph_break_count == 0
    det = _detector(device)
    explained = torch._dynamo.explain(det.logits)(torch.randn(2, 3, 8, 64, 64, device=device), torch.tensor(BOXES, device=device))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
