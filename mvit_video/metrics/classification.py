"""Video-level accuracy over multi-view tests: softmax summed over the views of each video (spec §2.3)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class MultiViewAccuracy(Metric):
    """Top-k accuracy of videos whose views arrive in any order, on any process. States are sums over
    ``[num_videos, num_classes]``, reduced across processes by summing, so DDP gives the single-process value."""

    full_state_update = False

    def __init__(self, num_videos: int, num_classes: int, top_k: tuple[int, ...] = (1, 5)) -> None:
        super().__init__()
        self.top_k = top_k  # k above num_classes counts as num_classes (always a hit), as the val metric does
        self.num_classes = num_classes
        self.add_state("scores", torch.zeros(num_videos, num_classes), dist_reduce_fx="sum")
        self.add_state("labels", torch.full((num_videos,), -1, dtype=torch.long), dist_reduce_fx="max")
        self.add_state("views", torch.zeros(num_videos), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor, video_index: torch.Tensor) -> None:
        self.scores.index_add_(0, video_index, logits.float().softmax(-1))
        self.labels[video_index] = labels
        self.views.index_add_(0, video_index, torch.ones_like(video_index, dtype=self.views.dtype))

    def compute(self) -> dict[str, torch.Tensor]:
        seen = self.views > 0
        scores, labels = self.scores[seen], self.labels[seen]
        top = scores.topk(min(max(self.top_k), self.num_classes), dim=-1).indices  # (V, kmax)
        hits = top == labels[:, None]
        return {f"top{k}": hits[:, : min(k, self.num_classes)].any(-1).float().mean() for k in self.top_k}
