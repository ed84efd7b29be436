"""AVA training under mixed precision: the loss is BCE on logits (``F.binary_cross_entropy`` on probabilities is
refused under CUDA autocast), equal to the official BCE on sigmoid outputs, and computed in fp32."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from mvit_video.tasks.detection import AVADetectionModule

from .helpers import AVA_TEST_CLASSES, tiny_detector_and_batch, train_steps


class _OpRecorder(TorchDispatchMode):
    """Names every aten op that runs: the ops CUDA autocast refuses can be looked for on a CPU-only machine."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name)
        return func(*args, **(kwargs or {}))


def _one_training_step(det, batch, precision: str) -> tuple[torch.Tensor, set[str], list[torch.dtype]]:
    """One optimiser step through Lightning at ``precision``: (loss, aten ops run, dtypes of the head's output)."""
    module = AVADetectionModule(det, partial(torch.optim.AdamW, lr=1e-4), class_ids=AVA_TEST_CLASSES)
    head_dtypes: list[torch.dtype] = []
    det.roi_head.projection.register_forward_hook(lambda m, i, out: head_dtypes.append(out.dtype))
    recorder = _OpRecorder()
    with recorder:
        (loss,) = train_steps(module, [batch], torch.device("cpu"), precision)
    return loss, recorder.ops, head_dtypes


def test_training_loss_equals_bce_on_sigmoid_outputs():
    det, batch = tiny_detector_and_batch()
    with torch.no_grad():
        expected = F.binary_cross_entropy(det(batch["video"], batch["boxes"]), batch["labels"])  # the official loss
    loss, _, _ = _one_training_step(det, batch, "32-true")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bf16_mixed_training_step_has_an_fp32_loss_and_no_op_refused_by_autocast():
    det, batch = tiny_detector_and_batch()
    with torch.no_grad():
        reference = F.binary_cross_entropy(det(batch["video"], batch["boxes"]), batch["labels"]).item()
    loss, ops, head_dtypes = _one_training_step(det, batch, "bf16-mixed")
    assert head_dtypes and head_dtypes[0] == torch.bfloat16  # autocast was on for the model
    assert "aten::binary_cross_entropy" not in ops  # CUDA autocast raises on it ("unsafe to autocast")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference, rel=2e-2)  # bf16 activations: a few ulps of 2^-8 off
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        probs = det.eval()(batch["video"], batch["boxes"])
    assert probs.dtype == torch.float32 and ((probs > 0) & (probs < 1)).all()  # scores are fp32 probabilities
