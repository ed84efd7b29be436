"""End-of-test reports: which classes a model gets wrong, as files in the run dir and images in the loggers.

- classification: ``confusion_matrix.png`` (rows: true class, normalised; with many classes only the
  ``CONFUSION_MAX_CLASSES`` most confused ones) and ``per_class_accuracy.png`` (video-level, sorted, worst first);
- detection / multi-label (AVA, Charades): ``per_class_ap.png``;
- ``per_class.csv`` (every class, sorted) and the worst classes, which ``train.print_summary`` shows.

``callbacks.EndOfTestReports`` collects the numbers from what the tasks already hold (see its docstring).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics.classification import video_scores  # noqa: F401  the reports' video scores are the metric's

CONFUSION_MAX_CLASSES = 30  # a readable matrix: the classes with the most errors beyond this
BAR_MAX_CLASSES = 40  # bars in the per-class chart beyond this: the worst ones
WORST_IN_SUMMARY = 5  # classes in the end-of-run table


@dataclass
class ClassReport:
    """Per-class test values. ``metric``: ``accuracy`` or ``AP``; ``counts``: test videos (or positives) per class,
    ``None`` where the metric does not say (no count column, no "(n)" in the chart); ``confusion``: ``(K, K)``
    video counts, row = true class, column = predicted (classification only)."""

    metric: str
    names: list[str]
    values: np.ndarray  # (K,) nan where a class has no test sample
    counts: np.ndarray | None  # (K,)
    confusion: np.ndarray | None = field(default=None, repr=False)

    def order(self) -> list[int]:
        """Classes with a value, worst first (ties by name)."""
        scored = [i for i in range(len(self.names)) if math.isfinite(self.values[i])]
        return sorted(scored, key=lambda i: (self.values[i], self.names[i]))

    def worst(self, n: int = WORST_IN_SUMMARY) -> list[tuple[str, float, int | None]]:
        """(name, value, count or None) of the ``n`` worst classes."""
        return [(self.names[i], float(self.values[i]), self.count(i)) for i in self.order()[:n]]

    def count(self, i: int) -> int | None:
        return None if self.counts is None else int(self.counts[i])


def classification_report(scores: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> ClassReport:
    """Top-1 per class and the confusion matrix of videos (``scores (V, K)``, ``labels (V,)``)."""
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), scores.argmax(1).numpy()), 1)
    counts = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(counts > 0, np.diag(confusion) / counts, np.nan)
    return ClassReport("accuracy", list(names), values, counts, confusion)


def ap_report(
    per_class_ap: dict[Any, float], names: dict[Any, str] | None = None, positives: dict[Any, int] | None = None
) -> ClassReport:
    """Per-class AP (``{class id: AP}``, nan for a class without positives) with the ids' names where known and,
    where the metric gives them, the test positives per class (``{class id: count}``); else no counts."""
    ids = list(per_class_ap)
    label = [str((names or {}).get(i, (names or {}).get(str(i), i))) for i in ids]
    values = np.array([float(per_class_ap[i]) for i in ids], dtype=np.float64)
    counts = None if positives is None else np.array([int(positives.get(i, 0)) for i in ids], dtype=np.int64)
    return ClassReport("AP", label, values, counts)


def confusion_classes(confusion: np.ndarray, max_classes: int = CONFUSION_MAX_CLASSES) -> list[int]:
    """All classes when few; else the ``max_classes`` with the most errors (wrong as true or as predicted class),
    most first, so the matrix shows where the model fails."""
    if len(confusion) <= max_classes:
        return list(range(len(confusion)))
    wrong = confusion.sum(0) + confusion.sum(1) - 2 * np.diag(confusion)  # (K,)
    return sorted(range(len(confusion)), key=lambda i: (-wrong[i], i))[:max_classes]


def plot_confusion(report: ClassReport, max_classes: int = CONFUSION_MAX_CLASSES):
    """The row-normalised confusion matrix (counts printed when it is small)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    assert report.confusion is not None
    keep = confusion_classes(report.confusion, max_classes)
    sub = report.confusion[np.ix_(keep, keep)]  # (k, k)
    rows = report.confusion[keep].sum(1, keepdims=True)  # (k, 1) every video of the class, shown or not
    norm = sub / np.maximum(rows, 1)
    size = 3 + 0.28 * len(keep)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = [report.names[i] for i in keep]
    ax.set_xticks(range(len(keep)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(keep)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = len(report.names)
    ax.set_title(
        "confusion (rows normalised)" + (f": the {len(keep)} most confused of {total} classes" if len(keep) < total else "")
    )
    if len(keep) <= 12:
        for (r, c), n in np.ndenumerate(sub):
            if n:
                ax.text(c, r, str(n), ha="center", va="center", fontsize=7, color="white" if norm[r, c] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_per_class(report: ClassReport, max_classes: int = BAR_MAX_CLASSES):
    """Horizontal bars, worst class at the top; only the ``max_classes`` worst when there are more."""
    from matplotlib.figure import Figure

    order = report.order()
    shown = order[:max_classes]
    fig = Figure(figsize=(7, 1.5 + 0.22 * len(shown)))
    ax = fig.subplots()
    ax.barh(range(len(shown)), [report.values[i] for i in shown], color="tab:blue")
    labels = [report.names[i] + ("" if report.counts is None else f" ({report.counts[i]})") for i in shown]
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.invert_yaxis()  # worst first, at the top
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"test {report.metric}")
    more = f", the {len(shown)} worst of {len(order)}" if len(shown) < len(order) else ""
    ax.set_title(f"per-class {report.metric}, sorted{more}")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def write_reports(report: ClassReport, out_dir: Path) -> list[Path]:
    """``per_class.csv`` and the PNGs of ``report`` in ``out_dir``; returns the PNG paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "per_class.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", report.metric] + ([] if report.counts is None else ["count"]))
        for i in [*report.order(), *(i for i in range(len(report.names)) if not math.isfinite(report.values[i]))]:
            writer.writerow([report.names[i], f"{report.values[i]:.6f}"] + ([] if report.counts is None else [report.count(i)]))
    figures = {f"per_class_{report.metric.lower()}": plot_per_class(report)}
    if report.confusion is not None:
        figures["confusion_matrix"] = plot_confusion(report)
    paths = []
    for name, fig in figures.items():
        fig.savefig(out_dir / f"{name}.png", dpi=100)
        paths.append(out_dir / f"{name}.png")
    return paths


def send_to_loggers(loggers: Sequence[Any], images: Sequence[Path], step: int) -> None:
    """The PNGs to every logger that takes images: TensorBoard (``add_image``), W&B (``log_image``), MLflow
    (an artifact under ``reports/``). CSV takes none."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    for lg in loggers:
        for path in images:
            tag = f"test/{path.stem}"
            if isinstance(lg, TensorBoardLogger):
                from matplotlib.image import imread

                rgb = (imread(path)[..., :3] * 255).round().astype(np.uint8)  # (H, W, 3)
                lg.experiment.add_image(tag, rgb, global_step=step, dataformats="HWC")
            elif isinstance(lg, WandbLogger):
                lg.log_image(key=tag, images=[str(path)], step=step)
            elif isinstance(lg, MLFlowLogger):
                lg.experiment.log_artifact(lg.run_id, str(path), artifact_path="reports")
