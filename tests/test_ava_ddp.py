"""The AVA metric gives the same mAP on 2 processes (gloo) as on one."""

import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mvit_video.metrics.ava import AVAFrameMAP, frame_map

CLASSES = [1, 3, 4, 7]


def _data(n_keys=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt_keys = torch.arange(n_keys).repeat_interleave(2)
    xy = torch.rand(len(gt_keys), 2, generator=g) * 0.6
    gt_boxes = torch.cat([xy, xy + 0.3], 1)
    gt_labels = torch.rand(len(gt_keys), 8, generator=g) < 0.3
    det_boxes = gt_boxes + torch.randn(gt_boxes.shape, generator=g) * 0.03
    det_scores = torch.rand(len(gt_keys), 8, generator=g)
    return gt_keys, det_boxes, det_scores, gt_keys, gt_boxes, gt_labels


def _update(metric, data, part, parts):
    det_keys, det_boxes, det_scores, gt_keys, gt_boxes, gt_labels = data
    sel = (det_keys % parts) == part
    # a padding sampler repeats the first keyframe on the last process
    sel = sel | ((det_keys == 0) & (part == parts - 1))
    metric.update(det_keys[sel], det_boxes[sel], det_scores[sel], gt_keys[sel], gt_boxes[sel], gt_labels[sel])


def _worker(rank, world, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    metric = AVAFrameMAP(CLASSES)
    _update(metric, _data(), rank, world)
    value = metric.compute().item()
    torch.save(value, f"{out}.{rank}")
    dist.destroy_process_group()


def test_metric_matches_numpy_evaluator():
    data = _data()
    metric = AVAFrameMAP(CLASSES)
    _update(metric, data, 0, 1)
    det_keys, det_boxes, det_scores, gt_keys, gt_boxes, gt_labels = (t.numpy() for t in data)
    cls = np.array(CLASSES)
    det = (np.repeat(det_keys, 4), np.repeat(det_boxes, 4, 0), np.tile(cls, len(det_keys)), det_scores[:, cls - 1].ravel())
    r, c = np.nonzero(gt_labels)
    expected, _ = frame_map((gt_keys[r], gt_boxes[r], c + 1, np.ones(len(r))), det, CLASSES)
    assert metric.compute().item() == expected
    assert 0.3 < expected < 1.0


def test_ddp_two_processes_equal_single(tmp_path):
    single = AVAFrameMAP(CLASSES)
    _update(single, _data(), 0, 1)
    expected = single.compute().item()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "res")), nprocs=2, join=True)
    got = [torch.load(f"{tmp_path / 'res'}.{r}") for r in range(2)]
    assert got[0] == got[1] == expected
