"""End-of-test reports: the per-class numbers from what the tasks hold, the plots, the CSV and the summary rows."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mvit_video.callbacks import EndOfTestReports
from mvit_video.metrics.classification import MultiViewAccuracy
from mvit_video.reports import (
    CONFUSION_MAX_CLASSES,
    classification_report,
    confusion_classes,
    plot_confusion,
    video_scores,
    write_reports,
)

NAMES = ["jump", "run", "swim"]
# 4 videos x 2 views, probabilities per view. Video 0 (jump): summed [0.9, 1.1, 0] -> run, but with its view 0
# counted twice (a DistributedSampler's padding repeats it) [1.6, 1.4, 0] -> jump: the repeat must count once.
PROBS = {
    (0, 0): [0.7, 0.3, 0.0],
    (0, 1): [0.2, 0.8, 0.0],
    (1, 0): [0.9, 0.1, 0.0],
    (1, 1): [0.6, 0.4, 0.0],
    (2, 0): [0.1, 0.8, 0.1],
    (2, 1): [0.2, 0.7, 0.1],
    (3, 0): [0.1, 0.5, 0.4],
    (3, 1): [0.2, 0.6, 0.2],
}
LABELS = [0, 0, 1, 2]
# video-level predictions [run, jump, run, run]: jump 1 of 2, run 1 of 1, swim 0 of 1
CONFUSION = [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def _metric(repeat: tuple[int, int] | None = (0, 0)) -> MultiViewAccuracy:
    keys = [*PROBS, *([repeat] if repeat else [])]
    metric = MultiViewAccuracy(len(NAMES))
    probs = torch.tensor([PROBS[k] for k in keys], dtype=torch.float64).clamp_min(1e-12)  # (N, K)
    metric.update(
        probs.log().float(),  # logits whose softmax is probs (to fp32 rounding; every argmax margin is >= 0.2)
        torch.tensor([LABELS[v] for v, _ in keys]),
        torch.tensor([v for v, _ in keys]),
        torch.tensor([w for _, w in keys]),
    )
    return metric


def test_video_scores_count_each_view_once_as_the_metric_does():
    metric = _metric()
    scores, labels = video_scores(metric.rows[0], len(NAMES))  # (V, K), (V,)
    assert labels.tolist() == LABELS
    assert scores.argmax(1).tolist() == [1, 0, 1, 1]  # video 0: its repeated view counted once
    top1 = (scores.argmax(1) == labels).double().mean()
    assert float(top1) == float(metric.compute()["top1"]) == 0.5


def test_classification_report_confusion_and_per_class_accuracy():
    scores, labels = video_scores(_metric().rows[0], len(NAMES))
    report = classification_report(scores, labels, NAMES)
    assert report.confusion.tolist() == CONFUSION
    assert report.values.tolist() == [0.5, 1.0, 0.0] and report.counts.tolist() == [2, 1, 1]
    assert report.worst(2) == [("swim", 0.0, 1), ("jump", 0.5, 2)]


def test_many_classes_show_the_most_confused():
    """400 classes: the matrix keeps the CONFUSION_MAX_CLASSES with the most errors, most first."""
    k = 400
    confusion = np.diag(np.full(k, 5))
    errors = {(7, 300): 9, (300, 7): 2, (42, 5): 4, (123, 124): 1}
    for (t, p), n in errors.items():
        confusion[t, p] = n
    keep = confusion_classes(confusion)
    assert len(keep) == CONFUSION_MAX_CLASSES
    assert keep[:6] == [7, 300, 5, 42, 123, 124]  # 11, 11, 4, 4, 1, 1 errors (ties by index)
    names = [f"c{i}" for i in range(k)]
    report = classification_report(torch.zeros(0, k), torch.zeros(0, dtype=torch.long), names)
    report.confusion = confusion
    fig = plot_confusion(report)
    assert len(fig.axes[0].get_xticks()) == CONFUSION_MAX_CLASSES
    assert "30 most confused of 400" in fig.axes[0].get_title()


def test_write_reports_csv_sorted_worst_first(tmp_path):
    scores, labels = video_scores(_metric().rows[0], len(NAMES))
    report = classification_report(scores, labels, [*NAMES, "dive"][:3])
    pngs = write_reports(report, tmp_path)
    assert sorted(p.name for p in pngs) == ["confusion_matrix.png", "per_class_accuracy.png"]
    assert all(p.stat().st_size > 1000 for p in pngs)
    rows = list(csv.DictReader((tmp_path / "per_class.csv").read_text().splitlines()))
    assert [(r["class"], float(r["accuracy"]), int(r["count"])) for r in rows] == [
        ("swim", 0, 1),
        ("jump", 0.5, 2),
        ("run", 1, 1),
    ]


def _trainer():
    return SimpleNamespace(is_global_zero=True, loggers=[], global_step=7)


def test_callback_reads_a_classifiers_test_metric(tmp_path):
    """Before the task's own on_test_epoch_end resets it: the classifier's first test metric and class names."""
    module = SimpleNamespace(test_views=[_metric()], metadata={"class_names": NAMES})
    cb = EndOfTestReports(tmp_path / "reports")
    cb.on_test_epoch_end(_trainer(), module)
    module.test_views[0].reset()  # what the task does next
    cb.on_test_end(_trainer(), module)
    assert (tmp_path / "reports" / "confusion_matrix.png").is_file()
    assert cb.report.worst(2) == [("swim", 0.0, 1), ("jump", 0.5, 2)]


@pytest.mark.parametrize(
    "metadata, names",
    [
        ({"action_names": {1: "stand", 2: "sit", 3: "walk"}}, ["sit", "stand"]),
        ({"class_names": ["a", "b", "c", "d"]}, ["c", "b"]),
    ],
)
def test_callback_reads_per_class_ap(tmp_path, metadata, names):
    """The AP protocol (AVA, Charades): ``test_map.per_class_ap`` after the task computed it; nan (no positive)
    is left out of the ranking, kept last in the CSV."""
    module = SimpleNamespace(test_map=SimpleNamespace(per_class_ap={1: 0.5, 2: 0.125, 3: math.nan}), metadata=metadata)
    cb = EndOfTestReports(tmp_path)
    cb.on_test_epoch_end(_trainer(), module)
    cb.on_test_end(_trainer(), module)
    assert [(n, v) for n, v, _ in cb.report.worst()] == [(names[0], 0.125), (names[1], 0.5)]
    assert (tmp_path / "per_class_ap.png").stat().st_size > 1000 and not (tmp_path / "confusion_matrix.png").exists()
    rows = list(csv.DictReader((tmp_path / "per_class.csv").read_text().splitlines()))
    assert [r["AP"] for r in rows] == ["0.125000", "0.500000", "nan"]
    assert cb.report.counts is None and "count" not in rows[0]  # the metric has no positive counts: none shown (not 1)


def test_ap_report_shows_the_metrics_positive_counts(tmp_path):
    """A metric with ``per_class_positives``: the real counts in the CSV (not 1 for every class with an AP)."""
    test_map = SimpleNamespace(per_class_ap={1: 0.5, 2: 0.125}, per_class_positives={1: 7, 2: 3})
    cb = EndOfTestReports(tmp_path)
    cb.on_test_end(_trainer(), SimpleNamespace(test_map=test_map, metadata={"class_names": ["a", "b", "c"]}))
    rows = list(csv.DictReader((tmp_path / "per_class.csv").read_text().splitlines()))
    assert [(r["class"], r["count"]) for r in rows] == [("c", "3"), ("b", "7")]


def test_summary_table_lists_the_worst_classes(tmp_path, capsys):
    from mvit_video.train import print_summary

    scores, labels = video_scores(_metric().rows[0], len(NAMES))
    report = classification_report(scores, labels, NAMES)
    print_summary({"test/top1": 0.5, "time_s": 1.0}, tmp_path, report)
    out = capsys.readouterr().out
    assert "worst: swim" in out and "0.0% accuracy of 1 videos" in out and "worst: jump" in out
    assert out.index("worst: swim") < out.index("worst: jump")


@pytest.mark.slow
def test_run_writes_reports_and_sends_them_to_the_loggers(tmp_path, tiny_kinetics, capsys):
    """A whole tiny run: reports in the run dir, the images in TensorBoard and MLflow, the worst classes printed."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mvit_video.train import run

    from .helpers import compose_cfg

    overrides = ["debug=tiny", "data.num_classes=4", "data.crop_size=48", "data.train_jitter_scales=[48,60]"]
    overrides += [
        "data.test_short_side=48",
        "data.test_num_clips=1",
        "data.test_num_crops=1",
        f"data.root={tiny_kinetics}",
        "data.synthetic=null",
        "logger=[csv,tensorboard,mlflow]",
    ]
    run(compose_cfg(overrides, tmp_path / "out", tmp_path / "data"))
    out = tmp_path / "out"
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "per_class.csv"):
        assert (out / "reports" / name).is_file()
    assert "worst: " in capsys.readouterr().out
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert {"test/confusion_matrix", "test/per_class_accuracy"} <= set(acc.Tags()["images"])
    client = MlflowClient(tracking_uri=f"file:{out}/mlruns")
    (exp,) = [e for e in client.search_experiments() if e.name == "mvit_video"]
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id, "reports")} == {
        "reports/confusion_matrix.png",
        "reports/per_class_accuracy.png",
    }


def test_callback_reads_charades_map(tmp_path):
    """The real multi-label metric (engineer E's CharadesMAP) after its compute, as the multilabel task holds it:
    class 0's one positive ranked first (AP 1), class 1's ranked last of 4 (AP 1/4), class 2 without positives."""
    from mvit_video.metrics.charades import CharadesMAP

    metric = CharadesMAP(3)
    scores = torch.tensor([[4.0, 1.0, 0.0], [3.0, 3.0, 0.0], [2.0, 4.0, 0.0], [1.0, 2.0, 0.0]])  # (V, K) logits
    targets = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])  # (V, K): video 0 is class 1's lowest score
    metric.update(scores, targets, torch.arange(4), torch.zeros(4, dtype=torch.long))
    metric.compute()
    module = SimpleNamespace(test_views=torch.nn.ModuleList(), test_map=metric, metadata={"class_names": ["open", "sit", "eat"]})
    cb = EndOfTestReports(tmp_path)
    cb.on_test_epoch_end(_trainer(), module)
    cb.on_test_end(_trainer(), module)
    assert cb.report.metric == "AP" and cb.report.worst() == [("sit", 0.25, 1), ("open", 1.0, 1)]  # one positive each


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # the rows are set, not update()d: exact probabilities
def test_report_argmax_is_the_one_top1_counted():
    """Summed in float32 (the metric) class 0 wins by one ulp, in float64 class 1 does: the report uses the
    metric's own sums, so its per-class accuracy gives test/top1 (it gave 0 where top1 was 1)."""
    probs = [[0.8631789088249207, 0.5414612293243408], [0.2997118830680847, 0.42268723249435425]]
    probs += [[0.028319671750068665, 0.12428327649831772], [0.6706244349479675, 0.7734031677246094]]  # (4 views, 2)
    rows = torch.cat([torch.tensor([[0.0, v, 0.0] for v in range(4)]), torch.tensor(probs)], 1)  # (4, 5) float32
    assert rows[:, 3:].double().sum(0).argmax() == 1  # the float64 sum would flip it
    metric = MultiViewAccuracy(2, top_k=(1,))
    metric.rows.append(rows.flatten())  # what update stores, with these exact probabilities
    top1 = float(metric.compute()["top1"])
    report = classification_report(*video_scores(rows.flatten(), 2), ["a", "b"])
    assert top1 == 1.0 and float(np.nansum(report.values * report.counts) / report.counts.sum()) == top1


def test_real_metrics_give_their_positive_counts():
    """CharadesMAP counts the videos with each class, AVAFrameMAP the ground-truth boxes of each class: the counts the
    AP reports show, for the classes that have an AP."""
    from mvit_video.metrics.ava import AVAFrameMAP
    from mvit_video.metrics.charades import CharadesMAP

    charades = CharadesMAP(num_classes=3)
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # class 2 has no positive
    charades.update(torch.rand(3, 3), targets, torch.arange(3), torch.zeros(3, dtype=torch.long))
    charades.compute()
    assert charades.per_class_positives == {0: 2, 1: 1}

    ava = AVAFrameMAP(class_ids=[1, 2])
    box = torch.tensor([[0.1, 0.1, 0.5, 0.9]], dtype=torch.float64)
    gt_labels = torch.zeros(2, 80, dtype=torch.bool)
    gt_labels[0, [0, 1]] = gt_labels[1, 0] = True  # class 1 in two boxes, class 2 in one
    ava.update(torch.tensor([0]), box, torch.rand(1, 80), torch.tensor([0, 0]), torch.cat([box, box + 0.2]), gt_labels)
    ava.compute()
    assert ava.per_class_positives == {1: 2, 2: 1}
