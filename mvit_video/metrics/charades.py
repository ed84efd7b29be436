"""Charades mAP as the official evaluator defines it (``Charades_v1_classify.m``, adapted from THUMOS'15), over
multi-view tests: a video's score for a class is the maximum over its views (SlowFast's ``ENSEMBLE_METHOD: max``).

The official AP of one class is not VOC-interpolated: sort the videos by score (descending), take the precision at
the rank of every positive, and average those precisions over the positives,
``AP = (1 / P) * sum_{i: y_i = 1} (TP_i / i)``. The mAP is the mean over classes. A class with no positive has
AP 0/0: MATLAB's ``mean(ap_all)`` would then give NaN for the whole mAP; leaving such classes out of the mean (the
python port's ``np.nanmean``) is OUR CHOICE, so a subset of the test set still gives a number (``classes`` says how
many classes it covers; the official test set has positives for all 157, where both agree). Videos without any
action stay in the ranking as negatives, as in the MATLAB code (the python port's "approximate" ``charades_map``
moves them to the bottom instead).

Ties: the official evaluator builds its score matrix in the row order of ``Charades_v1_test.csv`` (the ground
truth), whatever the submission's order, and MATLAB's ``sort`` is stable, so tied videos keep the ground truth's
order. Here tied videos are ranked by their dataset index, which is that same order (``data.charades`` indexes the
test videos in CSV order): the ranking is the official one exactly, and it does not depend on how the rows reached
the metric (one process, or gathered from many in any order).

Missing videos: the official evaluator scores a test video absent from the submission ``-inf`` for every class, so
it ranks last (ties in ground-truth order) and its positives still count. ``tasks.multilabel`` does the same for a
test video that cannot be read: its views reach the metric with ``-inf`` scores (the ``/videos`` count includes
them; ``/unreadable_videos`` names them).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def charades_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class AP ``(K,)`` of ``scores (V, K)`` against 0/1 ``targets (V, K)``, rows in tie-break order (NaN for a
    class without positives). Computed in float64: counts and precisions are exact to 2**-52 relative."""
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices  # (V, K) rank -> row, ties by row
    hits = (targets.gather(0, order) > 0.5).double()  # (V, K) 1 where the video at this rank is a positive
    ranks = torch.arange(1, len(scores) + 1, dtype=torch.float64, device=scores.device)[:, None]  # (V, 1)
    precision = hits.cumsum(0) / ranks  # (V, K) precision at each rank
    positives = hits.sum(0)  # (K,)
    return (precision * hits).sum(0) / positives  # (K,) NaN where positives == 0


class CharadesMAP(Metric):
    """Video-level Charades mAP of multi-view tests, each view counted once under DDP.

    The state is the views themselves, one flat float32 row ``[video_index, view, targets (K), scores (K)]`` per view,
    gathered across processes (``cat``) and deduplicated by (video, view) at ``compute`` (``DistributedSampler`` pads
    with repeated views), as ``MultiViewAccuracy`` does. Scores are logits (any increasing function of them, the
    sigmoid included, ranks the same; logits do not saturate to ties in float32). ``compute`` returns ``mAP``,
    ``videos`` (how many videos it covers) and ``classes`` (how many classes have a positive); after it,
    ``per_class_ap`` holds ``{class id: AP}`` of the classes with a positive (the end-of-test reports read it)."""

    full_state_update = False
    MAX_INDEX = 2**24  # float32 holds every integer below it exactly

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("rows", [], dist_reduce_fx="cat")  # (N * (2K + 2),)
        self.per_class_ap: dict[int, float] = {}
        self.per_class_positives: dict[int, int] = {}  # videos with the class, of the same classes

    def update(self, scores: torch.Tensor, targets: torch.Tensor, video_index: torch.Tensor, view: torch.Tensor) -> None:
        """``scores (N, K)``, 0/1 ``targets (N, K)``, ``video_index`` and ``view`` ``(N,)``."""
        if len(view) and not (0 <= int(view.min()) and max(int(view.max()), int(video_index.max())) < self.MAX_INDEX):
            raise ValueError(f"video and view ids must be in [0, {self.MAX_INDEX})")
        ids = torch.stack([video_index, view], 1).float()  # (N, 2)
        rows = torch.cat([ids, targets.detach().float(), scores.detach().float()], 1)  # (N, 2K + 2)
        self.rows.append(rows.flatten())

    def video_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(videos (V,), scores (V, K), targets (V, K))``: videos ascending, each score the max over the video's
        distinct views (targets too: every view of a test video carries the video's labels)."""
        flat = dim_zero_cat(self.rows) if not isinstance(self.rows, list) or self.rows else torch.zeros(0)
        k = self.num_classes
        rows = flat.to(self.device).view(-1, 2 * k + 2)  # (N, 2K + 2), duplicates included
        video, view = rows[:, 0].long(), rows[:, 1].long()
        key = video * (int(view.max()) + 1 if len(view) else 1) + view  # (N,) one per (video, view)
        unique, inverse = torch.unique(key, return_inverse=True)
        first = torch.empty(len(unique), dtype=torch.long, device=key.device)
        first[inverse] = torch.arange(len(key), device=key.device)  # one row per (video, view)
        videos, per_view = torch.unique(video[first], return_inverse=True)  # (V,) ascending, (U,)
        index = per_view[:, None].expand(-1, k)  # (U, K)
        init = torch.full((len(videos), k), -torch.inf, device=rows.device)
        scores = init.scatter_reduce(0, index, rows[first, k + 2 :], "amax")  # (V, K)
        targets = init.clone().scatter_reduce(0, index, rows[first, 2 : k + 2], "amax")  # (V, K)
        return videos, scores, targets

    def compute(self) -> dict[str, torch.Tensor]:
        videos, scores, targets = self.video_scores()
        ap = charades_average_precision(scores, targets)  # (K,)
        has_positive = ~ap.isnan()
        self.per_class_ap = {k: float(ap[k]) for k in has_positive.nonzero().flatten().tolist()}
        self.per_class_positives = {k: int((targets[:, k] > 0.5).sum()) for k in self.per_class_ap}
        m_ap = ap[has_positive].mean() if has_positive.any() else torch.tensor(float("nan"), dtype=torch.float64)
        device = scores.device
        return {
            "mAP": m_ap.float().to(device),
            "videos": torch.tensor(float(len(videos)), device=device),
            "classes": torch.tensor(float(has_positive.sum()), device=device),
        }
