"""UCF101, HMDB51 and Charades on files in their official layouts (written by ``synthetic_benchmarks``: PyAV AVI and
mp4 files, frames extracted by the ffmpeg CLI), their format errors, the Charades mAP against a per-row reference of
the official evaluator, the multi-label task, and the 3-split mean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mvit_video.data.annotations import DatasetFormatError
from mvit_video.data.charades import FRAME_FPS, CharadesDataModule, multi_hot, read_charades_csv
from mvit_video.data.hmdb51 import HMDB51DataModule
from mvit_video.data.synthetic_benchmarks import (
    BenchmarkSpec,
    CharadesSpec,
    make_synthetic_charades,
    make_synthetic_hmdb51,
    make_synthetic_ucf101,
)
from mvit_video.data.ucf101 import UCF101DataModule
from mvit_video.metrics.charades import CharadesMAP, charades_average_precision
from tests.helpers import run_script

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    num_frames=4,
    crop_size=32,
    train_jitter_scales=(32, 40),
    test_num_clips=2,
    test_num_crops=1,
    batch_size=2,
    num_workers=0,
    decoder="pyav",
)


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    return make_synthetic_ucf101(tmp_path_factory.mktemp("ucf"), BenchmarkSpec(num_classes=2, clips=1), workers=0)


@pytest.fixture(scope="module")
def hmdb(tmp_path_factory) -> Path:
    return make_synthetic_hmdb51(tmp_path_factory.mktemp("hmdb"), BenchmarkSpec(num_classes=2, clips=2), workers=0)


@pytest.fixture(scope="module")
def charades(tmp_path_factory) -> Path:
    spec = CharadesSpec(num_classes=3, train_videos=2, test_videos=2, empty_every=2)
    return make_synthetic_charades(tmp_path_factory.mktemp("charades"), spec, workers=0)


# UCF101 ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_splits_from_the_official_lists(ucf, split):
    """Split k tests on group k; a test line's class is its folder, found without regard to the case of the file
    name (``HandstandPushups/v_HandStandPushups_g01_c01.avi``, as the official files are); CRLF line ends."""
    from mvit_video.data.decoding import frame_timeline

    assert (ucf / "ucfTrainTestlist" / "classInd.txt").read_bytes().endswith(b"HandstandPushups\r\n")
    assert frame_timeline(str(next((ucf / "UCF-101").rglob("*.avi")))).packed_b_frames  # B-frames in AVI, as DivX/XviD
    dm = UCF101DataModule(str(ucf), num_classes=2, split=split, **TINY)
    dm.check_files()
    assert dm.class_names == {0: "ApplyEyeMakeup", 1: "HandstandPushups"}
    test, train = dm.items("test"), dm.items("train")
    assert dm.items("val") == test
    assert sorted(Path(p).name for p, _ in test) == sorted(
        [f"v_ApplyEyeMakeup_g{split:02d}_c01.avi", f"v_HandStandPushups_g{split:02d}_c01.avi"]
    )
    assert all(label == (1 if "HandStand" in p else 0) for p, label in test + train)
    assert len(train) == 4 and all(f"_g{split:02d}_" not in p for p, _ in train)
    dm.setup("test")
    sample = dm.datasets["test"][3]  # video 1, clip 1 of 2 (debug views: 2 clips x 1 crop)
    assert sample["video"].shape == (3, 4, 32, 32) and sample["valid"] and sample["view"] == 1


def test_ucf101_test_class_from_the_folder_in_any_case(tmp_path):
    """Lists rewritten from the file names (``HandStandPushups/v_HandStandPushups_g01_c01.avi``, as some re-packaged
    copies have) still find class 37 ``HandstandPushups`` of ``classInd.txt``."""
    from mvit_video.data.ucf101 import read_ucf_list

    path = tmp_path / "testlist01.txt"
    path.write_bytes(b"HandStandPushups/v_HandStandPushups_g01_c01.avi\r\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n")
    ids = {"applyeyemakeup": 0, "handstandpushups": 36}
    assert read_ucf_list(path, ids, labelled=False) == [
        ("HandStandPushups/v_HandStandPushups_g01_c01.avi", 36),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0),
    ]


def _replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_bytes().split(b"\r\n")
    lines[lineno - 1] = text.encode()
    path.write_bytes(b"\r\n".join(lines))


@pytest.mark.parametrize(
    ("name", "line", "message"),
    [
        ("trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 3", "class id '3' is not in 1..2"),
        ("trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 2", "class id 2 but the video is in folder"),
        ("trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi", "expected '<ClassName>/<video>.avi <class id>'"),
        ("testlist01.txt", "Nope/v_Nope_g01_c01.avi", "folder 'Nope' of 'Nope/v_Nope_g01_c01.avi' is not a class"),
        ("classInd.txt", "3 HandstandPushups", "id 3 where 2 was expected"),
    ],
)
def test_ucf101_format_errors_name_the_file_and_line(ucf, tmp_path, name, line, message):
    root = tmp_path / "ucf"
    (root / "ucfTrainTestlist").mkdir(parents=True)
    (root / "UCF-101").symlink_to(ucf / "UCF-101")
    for f in (ucf / "ucfTrainTestlist").iterdir():
        (root / "ucfTrainTestlist" / f.name).write_bytes(f.read_bytes())
    path = root / "ucfTrainTestlist" / name
    _replace_line(path, 2, line)
    with pytest.raises(DatasetFormatError, match=rf"{path}:2: .*{_re(message)}"):
        UCF101DataModule(str(root), num_classes=2, split=1, **TINY).check_files()


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_ucf101_missing_video_and_bad_split(ucf, tmp_path):
    with pytest.raises(ValueError, match="data.split must be 1, 2 or 3"):
        UCF101DataModule(str(ucf), num_classes=2, split=4, **TINY)
    dm = UCF101DataModule(str(ucf), num_classes=2, split=1, video_dir="elsewhere", **TINY)
    with pytest.raises(DatasetFormatError, match=r"testlist01.txt: 2 of 2 listed videos are not in .*elsewhere"):
        dm.check_files(train=False)


def test_ucf101_missing_file_message_names_the_split_files(ucf):
    from mvit_video.data.ucf101 import CLASS_INDEX

    dm = UCF101DataModule(str(ucf), num_classes=2, split=1, **TINY)
    message = dm.missing_file_message(ucf / "ucfTrainTestlist" / "testlist01.txt")
    want = f"/{{{CLASS_INDEX},trainlist0N.txt,testlist0N.txt}} from UCF101TrainTestSplits-RecognitionTask.zip"
    assert message.endswith(want) and message.count("{") == message.count("}") == 1


# HMDB51 ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_flags(hmdb, split):
    """Flag 1 trains, 2 tests, 0 is in neither; classes (underscores and all) from the split files' names, sorted."""
    dm = HMDB51DataModule(str(hmdb), num_classes=2, split=split, **TINY)
    dm.check_files()
    assert dm.class_names == {0: "brush_hair", 1: "cartwheel"}
    test, train = dm.items("test"), dm.items("train")
    assert sorted(Path(p).name for p, _ in test) == sorted(
        f"Synthetic_{split}_{c}_f_cm_np1_fr_med_{i}.avi" for c in ("brush_hair", "cartwheel") for i in (0, 1)
    )
    unused = split % 3 + 1
    assert len(train) == 2 * 3 and not any(f"Synthetic_{unused}_" in p and p.endswith("_0.avi") for p, _ in train)
    assert all(label == (0 if "/brush_hair/" in p else 1) for p, label in test + train)


def test_hmdb51_errors(hmdb, tmp_path):
    root = tmp_path / "hmdb"
    (root / "testTrainMulti_7030_splits").mkdir(parents=True)
    (root / "hmdb51_org").symlink_to(hmdb / "hmdb51_org")
    for f in (hmdb / "testTrainMulti_7030_splits").iterdir():
        (root / "testTrainMulti_7030_splits" / f.name).write_text(f.read_text())
    path = root / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt"
    path.write_text(path.read_text().replace("_1.avi 2 ", "_1.avi 3 ", 1))
    with pytest.raises(DatasetFormatError, match=rf"{path}:2: .*flag 1 = train, 2 = test, 0 = unused"):
        HMDB51DataModule(str(root), num_classes=2, split=1, **TINY).check_files()
    with pytest.raises(DatasetFormatError, match="2 class split files for data.num_classes=51"):
        HMDB51DataModule(str(root), split=1, **TINY).check_files()


# Charades ----------------------------------------------------------------------------------------------------------


def test_charades_csv_and_labels(charades):
    """Every official column, quoted scripts with commas, an empty ``actions`` field; test items carry the video's
    labels."""
    rows = read_charades_csv(charades / "Charades_v1_test.csv", 3)
    assert [vid for vid, _ in rows] == ["V0000", "V0001"] and rows[1][1] == []
    assert len(rows[0][1]) == 2 and rows[0][1][0][1] == 0.0  # two segments, the first from 0 s
    dm = CharadesDataModule(str(charades), num_classes=3, source="frames", **TINY)
    dm.check_files()
    assert dm.class_names[0] == "Holding some clothes"
    labels = [label for _, label in dm.items("test")]
    assert labels[0].sum() == 2 and labels[1].sum() == 0


@pytest.mark.parametrize("source", ["frames", "video"])
def test_charades_training_clip_labels_are_the_overlapping_actions(charades, source):
    """A training clip's target is the actions that overlap its span (a clip inside one segment: that segment's class
    only), the span being where the frames were read: frame i of the 24 fps folder shows (i-1)/24 s."""
    dm = CharadesDataModule(str(charades), num_classes=3, source=source, sampling_rate=2, **TINY)
    dm.check_files()
    dm.setup("fit")
    ds = dm.datasets["train"]
    (segments,) = [a for a in dm._actions["train"] if a]  # the train video with actions (the other has none)
    video = next(i for i, a in enumerate(dm._actions["train"]) if a)
    seen = set()
    for seed in range(12):
        sample = ds[(video, seed)]
        t0, t1 = ds.load_frames.last_span
        expected = {c for c, s, e in segments if s < t1 and e > t0}
        assert set(sample["label"].nonzero().flatten().tolist()) == expected
        # frames: SlowFast's clip of (T - 1) x rate + 1 frames at 24 fps; video: the T x rate / target_fps window
        assert t1 - t0 == pytest.approx(((4 - 1) * 2 + 1) / FRAME_FPS if source == "frames" else 4 * 2 / dm.target_fps)
        seen.add(len(expected))
    assert seen == {1, 2}  # clips inside one segment and across the boundary
    video_label = dm.items("train")[video][1]
    assert multi_hot(segments, 3).equal(video_label) and video_label.sum() == 2


def test_charades_frame_i_shows_second_i_over_24(charades):
    """The frame folders (extracted by the ffmpeg CLI at 24 fps, as the official RGB release) show the mp4's frame at
    (i-1)/24 s in file i: each JPEG is closest to the 30 fps frame nearest that time (the clip labels rely on it)."""
    import av
    import numpy as np

    from mvit_video.data.decoding import read_frames

    with av.open(str(charades / "Charades_v1_480" / "V0000.mp4")) as container:
        video = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float32)  # (N, H, W, 3)
    names = sorted((charades / "Charades_v1_rgb" / "V0000").iterdir())
    assert names[0].name == "V0000-000001.jpg" and len(names) == pytest.approx(len(video) * FRAME_FPS / 30, abs=1)
    for j in range(0, len(names), 7):
        jpg = read_frames([names[j]])[0].permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 3)
        nearest = np.abs(video - jpg).mean((1, 2, 3)).argmin()
        assert abs(nearest - j * 30 / FRAME_FPS) <= 0.5  # frame j (0-based) at j/24 s, the 30 fps frame nearest it


def test_charades_errors_name_the_file_and_line(charades, tmp_path):
    csv_path = tmp_path / "Charades_v1_test.csv"
    text = (charades / "Charades_v1_test.csv").read_text()
    header, first, second = text.splitlines()[:3]
    first = first.replace('"A person moves', '"A person\nmoves')  # a quoted field over two lines
    csv_path.write_text("\n".join([header, first, second.replace(",,", ",c007 1.0 2.0,", 1)]) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"{csv_path}:4: class c007 is out of range c000..c002"):
        read_charades_csv(csv_path, 3)
    csv_path.write_text("\n".join([header, second.replace(",,", ",c001 1.0,", 1)]) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"{csv_path}:2: action 'c001 1.0'; expected 'cNNN start end'"):
        read_charades_csv(csv_path, 3)


# Charades mAP ------------------------------------------------------------------------------------------------------


def official_ap_per_row(scores: list[list[float]], labels: list[list[int]]) -> list[float]:
    """The official evaluator (Charades_v1_classify.m, THUMOSeventclspr), one class and one row at a time in plain
    Python floats: rows sorted by descending score, ties in row order (MATLAB's sort is stable); AP = mean over the
    positives of the precision at their rank; NaN for a class without positives."""
    aps = []
    for k in range(len(scores[0])):
        order = sorted(range(len(scores)), key=lambda i: -scores[i][k])  # stable
        tp = fp = 0
        total = 0.0
        for i in order:
            if labels[i][k] == 1:
                tp += 1
                total += tp / (tp + fp)
            else:
                fp += 1
        aps.append(total / tp if tp else float("nan"))
    return aps


def reference_map(scores, labels) -> float:
    aps = [a for a in official_ap_per_row(scores, labels) if a == a]
    return sum(aps) / len(aps)


def test_official_ap_is_not_interpolated():
    """Ranks 1..5 = [pos, neg, neg, pos, pos]: the official AP is (1 + 2/4 + 3/5) / 3 = 0.7; VOC's interpolated AP
    would be (1 + 0.6 + 0.6) / 3. Tied scores rank by row: a negative first halves the positive's precision."""
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.5]], dtype=torch.float64)
    labels = torch.tensor([[1], [0], [0], [1], [1]], dtype=torch.float64)
    assert charades_average_precision(scores, labels).item() == pytest.approx(0.7, abs=1e-15)
    assert official_ap_per_row(scores.tolist(), labels.long().tolist()) == pytest.approx([0.7], abs=1e-15)
    tied = charades_average_precision(torch.zeros(2, 1, dtype=torch.float64), torch.tensor([[0.0], [1.0]]))
    assert tied.item() == 0.5


def _views(scores: torch.Tensor, labels: torch.Tensor, views: int, gen: torch.Generator):
    """Per-view rows of videos whose max over views is ``scores``: one view holds it, the others are lower."""
    v, k = scores.shape
    per_view = scores[:, None, :] - torch.rand(v, views, k, generator=gen) - 0.01  # (V, views, K) below the max
    best = torch.randint(0, views, (v, k), generator=gen)
    per_view.scatter_(1, best[:, None, :], scores[:, None, :])
    video = torch.arange(v).repeat_interleave(views)
    view = torch.arange(views).repeat(v)
    return per_view.reshape(v * views, k), labels.repeat_interleave(views, 0), video, view


@pytest.mark.parametrize("ties", [False, True])
def test_charades_map_equals_the_per_row_reference(ties):
    """Random and tie-heavy scores (3 levels), classes without positives, videos without labels, 3 views per video
    (max), the rows shuffled and some repeated (DistributedSampler padding), split over two metrics as two
    processes would hold them. Tolerance: the mAP is returned in float32, one rounding (2**-24 relative) of a float64
    mean whose own error is below 64 * 2**-53."""
    gen = torch.Generator().manual_seed(int(ties))
    v, k = 64, 12
    scores = torch.randint(0, 3, (v, k), generator=gen).float() if ties else torch.randn(v, k, generator=gen)
    labels = (torch.rand(v, k, generator=gen) < 0.2).float()
    labels[:, 3] = 0  # a class without positives: left out of the mean
    labels[5] = 0  # a video without labels: a negative for every class
    rows = _views(scores, labels, 3, gen)
    perm = torch.randperm(len(rows[0]), generator=gen)
    pad = perm[:7]  # views that two processes both score
    halves = (perm[: len(perm) // 2], torch.cat([perm[len(perm) // 2 :], pad]))
    metrics = [CharadesMAP(k), CharadesMAP(k)]
    for metric, idx in zip(metrics, halves):
        metric.update(*(r[idx] for r in rows))
    metrics[0].merge_state(metrics[1])
    out = metrics[0].compute()
    want = reference_map(scores.tolist(), labels.long().tolist())
    assert out["mAP"].item() == pytest.approx(want, rel=2**-24, abs=1e-15)
    assert out["videos"].item() == v and out["classes"].item() == k - 1
    per_class = official_ap_per_row(scores.tolist(), labels.long().tolist())
    assert metrics[0].per_class_ap == pytest.approx({c: a for c, a in enumerate(per_class) if a == a}, abs=1e-12)


# The multi-label task, the experiments ----------------------------------------------------------------------------


class _PooledLinear(torch.nn.Module):
    """A stand-in classifier (the task's loss does not depend on the backbone): mean over C, T, H, W, then linear."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.fc(video.mean((1, 2, 3, 4))[:, None])  # (B, C, T, H, W) -> (B, K)


def test_multilabel_task_loss_is_bce_and_refuses_mixup():
    from functools import partial

    from mvit_video.tasks import MixupCutmix
    from mvit_video.tasks.multilabel import MultiLabelVideoModule

    torch.manual_seed(0)
    net = _PooledLinear(3)
    task = MultiLabelVideoModule(net, partial(torch.optim.AdamW, lr=1e-3), num_classes=3)
    task.log = lambda *a, **kw: None  # no trainer
    batch = {"video": 3 * torch.randn(2, 3, 4, 8, 8), "label": torch.tensor([[1.0, 0, 1], [0, 0, 0]])}
    loss = task.training_step(batch, 0)
    z, y = net(batch["video"]).double(), batch["label"].double()
    want = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z))).mean()  # fp64 reference
    assert loss.item() == pytest.approx(want.item(), rel=16 * 2**-24)  # a few fp32 log/exp roundings
    with pytest.raises(ValueError, match="task.mixup=null"):
        MultiLabelVideoModule(net, partial(torch.optim.AdamW, lr=1e-3), num_classes=3, mixup=MixupCutmix(3))


def test_unreadable_test_videos_count_as_minus_inf_scores():
    """As the official evaluator scores a video missing from the submission: ranked last, its positives count. Video
    0 (readable) is the positive of class 0, video 1 (unreadable) of class 1 at rank 2, class 2 has none:
    AP = (1, 1/2), mAP 0.75 over 2 videos (dropping video 1 would give 1.0 over class 0 alone)."""
    from functools import partial

    from mvit_video.tasks.multilabel import MultiLabelVideoModule

    task = MultiLabelVideoModule(_PooledLinear(3), partial(torch.optim.AdamW, lr=1e-3), num_classes=3)
    batch = {
        "video": torch.randn(2, 3, 4, 8, 8),
        "label": torch.tensor([[1.0, 0, 0], [0, 1, 0]]),
        "video_index": torch.tensor([0, 1]),
        "view": torch.tensor([0, 0]),
        "valid": torch.tensor([True, False]),
        "unreadable": ["v1.mp4"],
    }
    task.test_step(batch, 0)
    out = task.test_map.compute()
    assert out["videos"].item() == 2 and out["classes"].item() == 2 and out["mAP"].item() == 0.75
    assert task.unreadable["test"] == {"v1.mp4"}


def test_multilabel_checkpoints_say_so():
    """``inference.load`` reads the key to score with a sigmoid (tests/test_long_video.py checks predict)."""
    from functools import partial

    from mvit_video.tasks.multilabel import MultiLabelVideoModule

    task = MultiLabelVideoModule(_PooledLinear(3), partial(torch.optim.AdamW, lr=1e-3), num_classes=3, metadata={"x": 1})
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    assert checkpoint["mvit_video"]["multilabel"] is True and checkpoint["mvit_video"]["x"] == 1


@pytest.mark.parametrize("experiment", ["ucf101_mvitv2_s", "hmdb51_mvitv2_s", "charades_mvitv2_s"])
def test_no_val_split_experiments_test_the_last_epoch(experiment, tmp_path):
    """Their validation set is the test list: the tested checkpoint (the epoch checkpoint's ``best_model_path``,
    ``train._best_checkpoint``) must not be chosen by it, so that callback is unmonitored (it keeps the latest)."""
    from tests.helpers import compose_cfg

    cfg = compose_cfg([f"experiment={experiment}"], tmp_path / "out", tmp_path)
    assert cfg.callbacks.model_checkpoint.monitor is None and cfg.callbacks.model_checkpoint.get("save_top_k", 1) == 1


@pytest.mark.slow
def test_an_unmonitored_epoch_checkpoint_makes_train_test_the_last_epoch(tmp_path):
    """Lightning's side of the above: with ``monitor: null`` the checkpoint train.py tests is the last epoch's, even
    when validation was best earlier."""
    import lightning as L
    from hydra.utils import instantiate

    from mvit_video.train import _best_checkpoint
    from tests.helpers import compose_cfg

    cfg = compose_cfg(["experiment=charades_mvitv2_s"], tmp_path / "out", tmp_path)

    class Falling(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - batch[0]).pow(2).sum()

        def validation_step(self, batch, batch_idx):
            self.log(cfg.objective, 1.0 - self.current_epoch)  # best at epoch 0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)), batch_size=1)
    trainer = L.Trainer(
        max_epochs=3, callbacks=[instantiate(cfg.callbacks.model_checkpoint)], logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(Falling(), data, data)
    assert Path(_best_checkpoint(trainer)).name == "epoch_002.ckpt"


def test_split_mean(tmp_path):
    for job, (split, top1) in enumerate([(2, 0.5), (1, 0.25), (3, 1.0)]):
        run = tmp_path / str(job)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"data:\n  split: {split}\n")
        (run / "metrics.csv").write_text(f"epoch,test/top1,val/top1\n0,,0.1\n0,{top1},\n")
    out = run_script("split_mean.py", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "split 1: test/top1 = 25.00%" in out.stdout and "mean over splits 1-3: test/top1 = 58.33%" in out.stdout
    (tmp_path / "2" / ".hydra" / "config.yaml").write_text("data:\n  split: 1\n")
    out = run_script("split_mean.py", tmp_path)
    assert out.returncode == 2 and "split 1 again" in out.stderr


def _train(tmp_path: Path, experiment: str, writer: str, *overrides: str) -> subprocess.CompletedProcess:
    """``python train.py experiment=<x> debug=tiny`` on a synthetic copy (4 classes) of the official layout."""
    import importlib

    data = tmp_path / "data"
    getattr(importlib.import_module("mvit_video.data.synthetic_benchmarks"), f"make_synthetic_{writer}")(data, workers=0)
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"experiment={experiment}", "debug=tiny", f"data.root={data}"]
    cmd += ["data.num_classes=4", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path}"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "writer", "metric"),
    [("hmdb51_mvitv2_s", "hmdb51", "test/top1"), ("charades_mvitv2_s", "charades", "test/mAP")],
)
def test_tiny_training_run(tmp_path, experiment, writer, metric):
    """One split of HMDB51 (split 2), and Charades (multi-label: test/mAP), train and test in tiny form."""
    _train(tmp_path, experiment, writer, *(["data.split=2"] if writer == "hmdb51" else []))
    (run,) = (tmp_path / "logs" / experiment / "runs").iterdir()
    assert metric in (run / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.e2e
def test_ucf101_three_splits_and_their_mean(tmp_path):
    """The documented protocol: a Hydra multirun over data.split=1,2,3, then ``split_mean.py`` on its directory."""
    _train(tmp_path, "ucf101_mvitv2_s", "ucf101", "-m", "data.split=1,2,3")
    (sweep,) = (tmp_path / "logs" / "ucf101_mvitv2_s" / "multiruns").iterdir()
    out = run_script("split_mean.py", sweep)
    assert out.returncode == 0 and "mean over splits 1-3: test/top1 = " in out.stdout, out.stderr
    assert [line.split(":")[0] for line in out.stdout.splitlines()[:3]] == ["split 1", "split 2", "split 3"]
