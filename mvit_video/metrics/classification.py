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
    themselves, one row ``[video_index, view, label, softmax...]`` per view, gathered across processes (``cat``)
    and deduplicated by (video, view) before the softmax is summed per video. It needs neither the number of
    videos nor of views: both come from the rows. It is one flat float32 tensor so that a process that scored
    nothing gathers as an empty tensor of the same dtype (indices and labels are exact below 2**24). ``compute``
    also returns ``videos``: how many videos the accuracy covers (those with at least one scored view)."""

    full_state_update = False
    MAX_INDEX = 2**24  # float32 holds every integer below it exactly

    def __init__(self, num_classes: int, top_k: tuple[int, ...] = (1, 5)) -> None:
        super().__init__()
        self.top_k = top_k  # k above num_classes counts as num_classes (always a hit), as the val metric does
        self.num_classes = num_classes
        self.add_state("rows", [], dist_reduce_fx="cat")  # (N * (K + 3),) [video, view, label, softmax] per view

    def update(self, logits: torch.Tensor, labels: torch.Tensor, video_index: torch.Tensor, view: torch.Tensor) -> None:
        """``logits (N, K)``; ``labels``, ``video_index``, ``view`` ``(N,)``."""
        if len(view) and not (0 <= int(view.min()) and max(int(view.max()), int(video_index.max())) < self.MAX_INDEX):
            raise ValueError(f"video and view ids must be in [0, {self.MAX_INDEX})")
        probs = logits.detach().float().softmax(-1)  # (N, K)
        ids = torch.stack([video_index, view, labels], 1).float()  # (N, 3)
        self.rows.append(torch.cat([ids, probs], 1).flatten())  # (N * (K + 3),)

    def compute(self) -> dict[str, torch.Tensor]:
        flat = dim_zero_cat(self.rows) if not isinstance(self.rows, list) or self.rows else torch.zeros(0)
        scores, video_labels = video_scores(flat.to(self.device), self.num_classes)  # (V, K), (V,)
        top = scores.topk(min(max(self.top_k), self.num_classes), dim=-1).indices  # (V, kmax)
        hits = top == video_labels[:, None]
        out = {f"top{k}": hits[:, : min(k, self.num_classes)].any(-1).float().mean() for k in self.top_k}
        out["videos"] = torch.tensor(float(len(video_labels)), device=scores.device)
        return out


def video_scores(rows: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed softmax and label per video from ``MultiViewAccuracy``'s rows ``[video, view, label, softmax...]``,
    each (video, view) counted once, in the rows' dtype (float32): ``compute`` and the end-of-test reports both
    use it, so a report's argmax is the one test/top1 counted. Returns ``(V, K)`` scores and ``(V,)`` labels."""
    rows = rows.reshape(-1, num_classes + 3)  # (N, K + 3), duplicates included
    video, view, labels, probs = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2].long(), rows[:, 3:]
    key = video * (int(view.max()) + 1 if len(view) else 1) + view  # (N,) one per (video, view)
    unique, inverse = torch.unique(key, return_inverse=True)
    first = torch.empty(len(unique), dtype=torch.long, device=key.device)
    first[inverse] = torch.arange(len(key), device=key.device)  # (U,) one row per (video, view)
    videos, per_view = torch.unique(video[first], return_inverse=True)  # (V,), (U,)
    scores = torch.zeros(len(videos), num_classes, dtype=probs.dtype, device=probs.device)
    scores.index_add_(0, per_view, probs[first])  # (V, K)
    video_labels = torch.empty(len(videos), dtype=torch.long, device=key.device)
    video_labels[per_view] = labels[first]  # (V,)
    return scores, video_labels


def gather_names(names: Iterable[str]) -> set[str]:
    """The union of every process's ``names`` (e.g. unreadable files: DataLoader workers report to their own
    process, the processes of a DDP run are joined here)."""
    from ..data.sampling import gather_lists

    return set(gather_lists(sorted(names)))
