"""Export a classifier or an AVA detector: ``torch.export`` (an ``ExportedProgram``, saved as ``.pt2``) or ONNX.

Shapes are fixed at export (MViTv2's relative-position tables are sized for one token grid): export with the
clip size you will run, e.g. ``(1, 3, 16, 224, 224)``. ONNX goes through torch's dynamo exporter
(``pip install 'mvit_video[export]'`` brings onnx, onnxscript and onnxruntime, which the tests use to compare
the exported outputs with eager PyTorch).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def example_inputs(model: nn.Module, batch: int = 1, num_boxes: int = 3) -> tuple[torch.Tensor, ...]:
    """Inputs of the size the model was built for: a clip, and for a detector ``num_boxes`` boxes per clip."""
    backbone = getattr(model, "backbone", model)
    cfg = backbone.cfg
    video = torch.randn(batch, cfg.in_chans, cfg.num_frames, cfg.input_size, cfg.input_size)
    if not hasattr(model, "roi_head"):
        return (video,)
    idx = torch.arange(batch).repeat_interleave(num_boxes).float()[:, None]  # (K, 1) batch index of each box
    xy = torch.rand(batch * num_boxes, 2) * cfg.input_size / 2
    wh = torch.rand(batch * num_boxes, 2) * cfg.input_size / 2 + 4
    return video, torch.cat([idx, xy, xy + wh], 1)  # boxes (K, 5): index, x1, y1, x2, y2 in pixels


def export_program(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: str | Path | None = None):
    """``torch.export.export`` of the model in eval mode; saved to ``path`` (``.pt2``) when given."""
    program = torch.export.export(model.eval(), inputs)
    if path is not None:
        torch.export.save(program, str(path))
    return program


def export_onnx(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: str | Path) -> Path:
    """ONNX through the dynamo exporter; input names ``video`` (and ``boxes``), output ``scores``."""
    try:
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'mvit_video[export]'") from e
    names = ["video", "boxes"][: len(inputs)]
    torch.onnx.export(model.eval(), inputs, str(path), input_names=names, output_names=["scores"], dynamo=True)
    return Path(path)


def run_onnx(path: str | Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Run an exported ONNX file with onnxruntime (CPU)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("running ONNX needs onnxruntime: pip install 'mvit_video[export]'") from e
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    return torch.from_numpy(session.run(None, feed)[0])
