"""AVA frame-mAP as a torchmetrics ``Metric`` (what the detection task logs); the algorithm and the file readers
are the pure module :mod:`mvit_video.metrics.ava_frame_map`."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from .ava_frame_map import TOP_K_PER_KEYFRAME, csv_round, frame_map


class AVAFrameMAP(Metric):
    """AVA frame-mAP as a torchmetrics ``Metric``: rows are gathered (``cat``) across processes and the
    official algorithm runs once on all of them, so DDP gives the single-process number. Rows repeated by
    a padding ``DistributedSampler`` (same keyframe, same box) are counted once.

    ``update(det_keys, det_boxes, det_scores, gt_keys, gt_boxes, gt_labels)``: ``*_keys`` give the keyframe code
    of every box row (one integer per (video, second)); ``det_scores (K, C)`` are probabilities of action ids
    1..C; ``gt_labels (M, C)`` is multi-hot.

    The rows are evaluated in the order they were given (keyframes in first appearance, then each box's classes in
    ``class_ids`` order), as the detection CSV lists them, because the official evaluator's result depends on that
    order where scores tie. ``score_decimals`` / ``box_decimals``: round detection scores and all boxes as the CSV
    writer does (:func:`~mvit_video.metrics.ava_frame_map.csv_round`), so this metric equals the official evaluator
    on the written file to the last bit; None keeps the values as given. Ground-truth boxes arrive as float32; rounded
    to the annotation files' 3 decimals they are again exactly the values the evaluator parses from those files.
    One thing the batches cannot carry is the ground truth's person ids, by which the official reader orders
    ground-truth boxes: they decide only which of two boxes a detection takes when its IoU with both is exactly
    equal (>= 0.5), and then the CSV's evaluation is the official one.
    """

    full_state_update = False

    def __init__(
        self,
        class_ids: list[int],
        top_k: int = TOP_K_PER_KEYFRAME,
        score_decimals: int | None = None,
        box_decimals: int | None = None,
    ) -> None:
        super().__init__()
        self.class_ids, self.top_k = list(class_ids), top_k
        self.score_decimals, self.box_decimals = score_decimals, box_decimals
        self.per_class_ap: dict[int, float] = {}  # of the last compute(): the end-of-test report reads it
        self.per_class_positives: dict[int, int] = {}  # ground-truth boxes per class, of the same compute()
        for name in ("det_keys", "det_boxes", "det_scores", "gt_keys", "gt_boxes", "gt_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, det_keys, det_boxes, det_scores, gt_keys, gt_boxes, gt_labels) -> None:
        self.det_keys.append(det_keys.long())
        self.det_boxes.append(det_boxes.double())
        self.det_scores.append(det_scores.double())
        self.gt_keys.append(gt_keys.long())
        self.gt_boxes.append(gt_boxes.double())
        self.gt_labels.append(gt_labels.bool())

    def compute(self) -> torch.Tensor:
        def cat(x):
            return (torch.cat(x) if isinstance(x, list) else x).cpu().numpy()

        dk, db, ds = cat(self.det_keys), cat(self.det_boxes), cat(self.det_scores)
        gk, gb, gl = cat(self.gt_keys), cat(self.gt_boxes), cat(self.gt_labels)
        if self.box_decimals is not None:
            db, gb = csv_round(db, self.box_decimals), csv_round(gb, self.box_decimals)
        if self.score_decimals is not None:
            ds = csv_round(ds, self.score_decimals)
        _, keep = np.unique(np.c_[dk, db], axis=0, return_index=True)
        keep = np.sort(keep)
        dk, db, ds = dk[keep], db[keep], ds[keep]
        _, keep_g = np.unique(np.c_[gk, gb, gl], axis=0, return_index=True)
        keep_g = np.sort(keep_g)
        gk, gb, gl = gk[keep_g], gb[keep_g], gl[keep_g]
        cls = np.asarray(self.class_ids)
        det = (np.repeat(dk, len(cls)), np.repeat(db, len(cls), 0), np.tile(cls, len(dk)), ds[:, cls - 1].reshape(-1))
        rows, cols = np.nonzero(gl)
        gt = (gk[rows], gb[rows], cols + 1, np.ones(len(rows)))
        mean_ap, self.per_class_ap = frame_map(gt, det, self.class_ids, top_k=self.top_k)
        self.per_class_positives = {int(c): int((gt[2] == c).sum()) for c in self.per_class_ap}
        return torch.tensor(mean_ap, dtype=torch.float64)
