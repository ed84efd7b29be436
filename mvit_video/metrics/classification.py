"""Video-level accuracy over multi-view tests: softmax summed over the views of each video (spec §2.3)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class MultiViewAccuracy(Metric):
    """Top-k accuracy of videos whose views arrive in any order, on any process, each view counted once.

    ``DistributedSampler`` pads a dataset to a multiple of the world size by repeating its first indices, so some
    views reach two processes; summed per video they would count twice. The state is therefore the views
    themselves, one row ``[key, label, softmax...]`` per view with ``key = video_index * num_views + view``,
    gathered across processes (``cat``) and deduplicated by key before the softmax is summed per video. It is one
    flat float32 tensor so that a process that scored nothing gathers as an empty tensor of the same dtype (keys
    and labels are exact below 2**24). ``compute`` also returns ``videos``: how many videos the accuracy covers
    (those with at least one scored view)."""

    full_state_update = False
    MAX_KEY = 2**24  # float32 holds every integer below it exactly

    def __init__(self, num_videos: int, num_classes: int, num_views: int = 1, top_k: tuple[int, ...] = (1, 5)) -> None:
        super().__init__()
        if num_videos * num_views > self.MAX_KEY:
            raise ValueError(f"{num_videos} videos x {num_views} views is more than {self.MAX_KEY} views")
        self.top_k = top_k  # k above num_classes counts as num_classes (always a hit), as the val metric does
        self.num_videos, self.num_classes, self.num_views = num_videos, num_classes, num_views
        self.add_state("rows", [], dist_reduce_fx="cat")  # (N * (K + 2),) [key, label, softmax] per view

    def update(self, logits: torch.Tensor, labels: torch.Tensor, video_index: torch.Tensor, view: torch.Tensor) -> None:
        """``logits (N, K)``; ``labels``, ``video_index``, ``view`` ``(N,)``; ``view`` in ``[0, num_views)``."""
        if len(view) and not (0 <= int(view.min()) and int(view.max()) < self.num_views):
            raise ValueError(f"view ids must be in [0, {self.num_views}), got {view.tolist()}")
        key = video_index.long() * self.num_views + view.long()  # (N,)
        probs = logits.detach().float().softmax(-1)  # (N, K)
        rows = torch.cat([key[:, None].float(), labels[:, None].float(), probs], 1)  # (N, K + 2)
        self.rows.append(rows.flatten())

    def compute(self) -> dict[str, torch.Tensor]:
        flat = dim_zero_cat(self.rows) if not isinstance(self.rows, list) or self.rows else torch.zeros(0)
        rows = flat.to(self.device).view(-1, self.num_classes + 2)  # (N, K + 2), duplicates included
        keys, labels, probs = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2:]
        unique, inverse = torch.unique(keys, return_inverse=True)
        first = torch.empty(len(unique), dtype=torch.long, device=keys.device)
        first[inverse] = torch.arange(len(keys), device=keys.device)  # one row per (video, view)
        video = unique // self.num_views  # (U,)
        scores = torch.zeros(self.num_videos, self.num_classes, device=probs.device).index_add_(0, video, probs[first])
        video_labels = torch.full((self.num_videos,), -1, dtype=torch.long, device=keys.device)
        video_labels[video] = labels[first]
        seen = torch.zeros(self.num_videos, dtype=torch.bool, device=keys.device)
        seen[video] = True
        scores, video_labels = scores[seen], video_labels[seen]  # (V, K), (V,)
        top = scores.topk(min(max(self.top_k), self.num_classes), dim=-1).indices  # (V, kmax)
        hits = top == video_labels[:, None]
        out = {f"top{k}": hits[:, : min(k, self.num_classes)].any(-1).float().mean() for k in self.top_k}
        out["videos"] = seen.sum().float()
        return out


def gather_names(names: Iterable[str]) -> set[str]:
    """The union of every process's ``names`` (e.g. unreadable files: DataLoader workers report to their own
    process, the processes of a DDP run are joined here)."""
    from ..data.sampling import gather_lists

    return set(gather_lists(sorted(names)))
