"""Training pieces: mixup targets, LR schedule, parameter groups, multi-view metric."""

import math

import torch

from mvit_video.metrics.classification import MultiViewAccuracy
from mvit_video.models import build_model
from mvit_video.tasks import MixupCutmix, param_groups, warmup_cosine


def test_mixup_targets_sum_to_one_and_mix_pairs():
    torch.manual_seed(0)
    mix = MixupCutmix(num_classes=5, prob=1.0, switch_prob=0.5, label_smoothing=0.1)
    video = torch.randn(4, 3, 4, 16, 16)
    labels = torch.tensor([0, 1, 2, 3])
    for _ in range(10):
        mixed, target = mix(video, labels)
        assert mixed.shape == video.shape
        torch.testing.assert_close(target.sum(-1), torch.ones(4))
        # sample 0 mixes with sample 3 (batch flipped)
        assert target[0, 0] > 0.1 / 5 or target[0, 3] > 0.1 / 5


def test_cutmix_box_is_the_same_on_every_frame():
    mix = MixupCutmix(num_classes=3, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    video = torch.zeros(2, 1, 4, 32, 32)
    video[1] = 1.0
    mixed, target = mix(video, torch.tensor([0, 1]))
    masks = mixed[0, 0]  # (T, H, W)
    assert all(torch.equal(masks[0], masks[t]) for t in range(4))
    torch.testing.assert_close(target[0, 1], masks[0].mean())  # lambda corrected to the box area


def test_warmup_cosine_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = warmup_cosine(opt, steps_per_epoch=10, max_epochs=10, warmup_epochs=2, warmup_start_lr=0.0, end_lr=0.0)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and math.isclose(lrs[10], 0.5) and math.isclose(lrs[20], 1.0)
    assert math.isclose(lrs[60], 0.5, abs_tol=1e-9) and lrs[99] < 1e-3


def test_param_groups_no_decay_for_1d_and_bias():
    model = build_model("mvitv2_tiny", num_classes=3)
    groups = param_groups(model, weight_decay=0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        expect = not (p.ndim <= 1 or name.endswith(".bias"))
        assert (id(p) in decayed) == expect, name
    assert id(model.cls_token) in decayed  # official: cls and rel-pos tables are decayed
    lrd = param_groups(model, 0.05, layer_decay=0.5)
    assert sorted({g["lr_scale"] for g in lrd})[0] == 0.5 ** (len(model.blocks) + 1)


def test_multiview_accuracy_sums_softmax_over_views():
    metric = MultiViewAccuracy(num_videos=2, num_classes=3, top_k=(1,))
    # video 0: two weak views for class 1, one confident view for class 2 -> summed softmax picks 2
    logits = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 10.0], [5.0, 0.0, 0.0]])
    metric.update(logits, torch.tensor([2, 2, 2, 0]), torch.tensor([0, 0, 0, 1]))
    assert metric.compute()["top1"] == 1.0
