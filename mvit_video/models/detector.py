"""AVA action detection by composition: a backbone's last-stage map and an ROI head (spec §4.4).

There is no transformer-specific ROI head in the official code: SlowFast runs its ResNet ROI head on MViT's
final tokens reshaped to a map, with spatial scale 1/32 (MViT's last stage), aligned ROIAlign, sigmoid outputs.
Here the head returns logits: training takes BCE on logits (``F.binary_cross_entropy`` on probabilities is refused
under CUDA autocast, and is less stable); ``AVADetector.forward`` applies the sigmoid, so a detector (and its
``torch.export`` / ONNX program) still outputs probabilities.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align


class ROIActionHead(nn.Module):
    """Temporal average pool -> ROIAlign (7x7, aligned, adaptive sampling) -> spatial max pool -> dropout ->
    linear -> logits. The official head's sigmoid is applied by ``AVADetector.forward`` (and folded into the loss,
    BCE with logits, for training)."""

    def __init__(
        self, dim: int, num_classes: int, resolution: int = 7, spatial_scale: float = 1 / 32, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.resolution, self.spatial_scale = resolution, spatial_scale
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes)

    def forward(self, fmap: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``fmap (B, C, T, H, W)``, ``boxes (K, 5)`` = (batch index, x1, y1, x2, y2) in input pixels -> logits
        ``(K, classes)``."""
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes must be (K, 5): batch index, x1, y1, x2, y2; got shape {tuple(boxes.shape)}")
        x = fmap.mean(dim=2)  # (B, C, H, W): average over the whole temporal extent
        # In fp32: a bf16 box corner (8 significand bits) would move by up to 1 px beyond 256, 2 px beyond 512.
        rois = roi_align(x.float(), boxes.float(), self.resolution, self.spatial_scale, sampling_ratio=0, aligned=True)
        x = rois.to(x.dtype)  # (K, C, 7, 7)
        x = x.amax(dim=(2, 3))  # (K, C): max pool over the 7x7 grid
        return self.projection(self.dropout(x))  # (K, classes) logits


class AVADetector(nn.Module):
    """``backbone`` must provide ``forward_feature_map(video) -> (B, C, T', H', W')`` (cls removed after the
    final norm) and ``num_features``."""

    def __init__(self, backbone: nn.Module, roi_head: ROIActionHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.roi_head = roi_head

    def logits(self, video: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``video (B, C, T, H, W)``, ``boxes (K, 5)`` -> ``(K, classes)`` logits, for the loss."""
        return self.roi_head(self.backbone.forward_feature_map(video), boxes)

    def forward(self, video: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(K, classes)`` probabilities (sigmoid in fp32, also under autocast): the detector's scores."""
        return torch.sigmoid(self.logits(video, boxes).float())


def build_ava_detector(backbone: nn.Module, num_classes: int, dropout: float = 0.5) -> AVADetector:
    """``num_classes``: the dataset's action ids (``data.num_classes``; AVA's are in ``conf/data/ava.yaml``). The ROI
    head's spatial scale is 1 / the backbone's ``feature_stride`` (1/32 for the paper's 4-stage models)."""
    scale = 1.0 / getattr(backbone, "feature_stride", 32)
    return AVADetector(backbone, ROIActionHead(backbone.num_features, num_classes, spatial_scale=scale, dropout=dropout))
