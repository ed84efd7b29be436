"""The AVA metric gives the same mAP on 2 processes (gloo) as on one, and a 2-process run writes every process's
detections once: the official evaluator on the CSV gives the logged val/mAP."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mvit_video.metrics.ava import AVAFrameMAP
from mvit_video.metrics.ava_frame_map import evaluate_files, frame_map

from .helpers import ava_tiny_run, compose_cfg

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


# 3 val videos x 2 keyframes, one excluded: 5 keyframes, so the 2-process sampler pads rank 1 with a repeat.
AVA_DDP = [*ava_tiny_run(val_videos=3), "trainer.strategy=ddp", "trainer.devices=2", "+trainer.num_sanity_val_steps=0"]


def _train_worker(rank: int, world: int, port: int, tmp: str) -> None:
    """One process of a `torchrun`-style launch (Lightning reads the ranks from the environment)."""
    from mvit_video.train import run

    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(env, NODE_RANK="0", GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    metrics = run(compose_cfg(AVA_DDP, Path(tmp) / "out", Path(tmp) / "data"))
    Path(tmp, f"metrics.{rank}.json").write_text(json.dumps(metrics))


def test_ddp_run_writes_every_rank_detections_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_train_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    logged = json.loads((tmp_path / "metrics.0.json").read_text())["val/mAP"]
    ann = tmp_path / "data" / "synthetic_ava" / "annotations"
    det = tmp_path / "out" / "detections" / "detections_val.csv"
    rows = [line.split(",") for line in det.read_text().splitlines()]
    assert len({(r[0], r[1]) for r in rows}) == 5  # every keyframe of both ranks
    assert len({tuple(r[:7]) for r in rows}) == len(rows)  # the padding's repeat is written once
    res = evaluate_files(
        ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        ann / "ava_val_v2.2.csv",
        det,
        ann / "ava_val_excluded_timestamps_v2.2.csv",
    )
    assert res["mAP"] == logged  # exactly: the metric rounds as the CSV and ranks as the official evaluator
