"""AVA detector: forward/backward through the backbone and the ROI head."""

import pytest
import torch

from mvit_video.models import build_model
from mvit_video.models.detector import build_ava_detector


def test_detector_forward_backward(device):
    det = build_ava_detector(build_model("mvitv2_tiny", num_classes=0), num_classes=80).to(device)
    video = torch.randn(2, 3, 8, 64, 64, device=device)
    boxes = torch.tensor([[0, 4.0, 4.0, 40.0, 60.0], [1, 10.0, 0.0, 63.0, 30.0], [1, 0.0, 0.0, 64.0, 64.0]], device=device)
    probs = det(video, boxes)
    assert probs.shape == (3, 80) and (probs > 0).all() and (probs < 1).all()
    det.eval()  # the head's dropout off: forward is the sigmoid of the logits the loss takes
    assert torch.allclose(det(video, boxes), torch.sigmoid(det.logits(video, boxes)))
    det.train()
    target = torch.zeros(3, 80, device=device)
    target[0, 11] = target[2, 79] = 1
    torch.nn.functional.binary_cross_entropy(probs, target).backward()
    assert all(p.grad is not None for p in det.parameters())


def test_detector_rejects_bad_boxes():
    det = build_ava_detector(build_model("mvitv2_tiny", num_classes=0), num_classes=80)
    with pytest.raises(ValueError, match=r"boxes must be \(K, 5\)"):
        det(torch.randn(1, 3, 8, 64, 64), torch.zeros(2, 4))


def test_detection_task_grad_checkpointing_gives_the_same_gradients():
    """``task.grad_checkpointing`` (the L detector at 40 x 312) recomputes the blocks in backward: the backbone's flag is
    set and the gradients are exactly those without it: checkpointing replays the same CPU kernels on the same
    inputs (no dropout here), and each parameter gets one contribution, so nothing is summed in another order."""
    from functools import partial

    from mvit_video.tasks.detection import AVADetectionModule

    from .helpers import AVA_TEST_CLASSES, tiny_detector_and_batch

    grads = []
    for checkpointing in (False, True):
        det, batch = tiny_detector_and_batch()
        module = AVADetectionModule(
            det, partial(torch.optim.SGD, lr=0.1), class_ids=AVA_TEST_CLASSES, grad_checkpointing=checkpointing
        )
        assert det.backbone.grad_checkpointing is checkpointing
        module.training_step(batch, 0).backward()
        grads.append([p.grad.clone() for p in det.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for plain, recomputed in zip(*grads, strict=True):
        torch.testing.assert_close(recomputed, plain, rtol=0, atol=0)
