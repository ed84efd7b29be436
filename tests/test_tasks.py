"""Training pieces: mixup targets, LR schedule, parameter groups, multi-view metric (one and two processes)."""

import math
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from mvit_video.metrics.classification import MultiViewAccuracy, gather_names

# The training stack (mvit_video.models, mvit_video.tasks: Lightning, torchvision) is imported inside the tests that
# use it: the 2-process test spawns fresh interpreters that import this module, and should not wait for it.


def test_mixup_targets_sum_to_one_and_mix_pairs():
    from mvit_video.tasks import MixupCutmix

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
    from mvit_video.tasks import MixupCutmix

    mix = MixupCutmix(num_classes=3, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    video = torch.zeros(2, 1, 4, 32, 32)
    video[1] = 1.0
    mixed, target = mix(video, torch.tensor([0, 1]))
    masks = mixed[0, 0]  # (T, H, W)
    assert all(torch.equal(masks[0], masks[t]) for t in range(4))
    torch.testing.assert_close(target[0, 1], masks[0].mean())  # lambda corrected to the box area


def test_warmup_cosine_schedule():
    from mvit_video.tasks import warmup_cosine

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
    from mvit_video.models import build_model
    from mvit_video.tasks import param_groups

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
    metric = MultiViewAccuracy(num_classes=3, top_k=(1,))
    # video 0: two weak views for class 1, one confident view for class 2 -> summed softmax picks 2
    logits = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 10.0], [5.0, 0.0, 0.0]])
    metric.update(logits, torch.tensor([2, 2, 2, 0]), torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 2, 0]))
    out = metric.compute()
    assert out["top1"] == 1.0 and out["videos"] == 2


# 3 videos x 3 views. Video 0 (label 2): view 0 leans to class 1, views 1 and 2 to class 2; summed once each, class 2
# wins, but with view 0 counted twice class 1 does. Videos 1 and 2 are plainly right.
VIEW_LOGITS = torch.tensor(
    [
        [0.0, 4.0, 0.0],
        [0.0, 0.0, 1.5],
        [0.0, 0.0, 1.5],
        [5.0, 0, 0],
        [5.0, 0, 0],
        [5.0, 0, 0],
        [0, 5.0, 0],
        [0, 5.0, 0],
        [0, 5.0, 0],
    ]
)
VIEW_LABELS = torch.tensor([2, 2, 2, 0, 0, 0, 1, 1, 1])


def _update_shard(metric: MultiViewAccuracy, indices: list[int]) -> None:
    idx = torch.tensor(indices)
    metric.update(VIEW_LOGITS[idx], VIEW_LABELS[idx], idx // 3, idx % 3)


def test_multiview_accuracy_counts_a_repeated_view_once():
    metric = MultiViewAccuracy(num_classes=3, top_k=(1,))
    _update_shard(metric, list(range(9)))
    assert metric.compute()["top1"] == 1.0
    _update_shard(metric, [0])  # the padding of a DistributedSampler: view 0 of video 0 again
    assert metric.compute()["top1"] == 1.0


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    # 9 views on 2 processes: the sampler pads to 10 by giving rank 1 view 0 a second time
    shard = list(DistributedSampler(range(9), num_replicas=world, rank=rank, shuffle=False))
    metric = MultiViewAccuracy(num_classes=3, top_k=(1,))
    _update_shard(metric, shard)
    result = {k: v.item() for k, v in metric.compute().items()}
    result["shard"] = shard
    result["names"] = sorted(gather_names({"shared.mp4", f"rank{rank}.mp4"}))
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


def test_multiview_accuracy_on_two_processes_counts_padded_views_once(tmp_path):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "res")), nprocs=2, join=True)
    results = [torch.load(f"{tmp_path / 'res'}.{r}") for r in range(2)]
    assert results[1]["shard"] == [1, 3, 5, 7, 0]  # the padded duplicate the metric must not count again
    for res in results:
        assert res["top1"] == 1.0 and res["videos"] == 3  # the single-process value
        assert res["names"] == ["rank0.mp4", "rank1.mp4", "shared.mp4"]  # unreadable files: union of all ranks
