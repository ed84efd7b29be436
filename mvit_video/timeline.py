"""Predictions and features over long videos: windows, one streaming decode, batched inference, timeline files.

A window ``[s, s + W)`` is read as if it were a video of its own, the file ``ffmpeg -ss s -t W`` would write: its
views are the ones ``VideoClassifier.views`` takes on such a file. Clip ``i`` of ``n`` starts ``clip_start(W, span,
i, n)`` seconds into the window, ``span = num_frames x sampling_rate / target_fps`` (the seconds a training clip
covers), and takes ``num_frames`` frames uniformly over the frames shown in ``[start, min(start + span, W))``. So
a window no longer than the model's span spreads the clip over the whole window (a 2 s window of a 16x4 model at
30 fps, span 2.13 s: 16 frames over the 2 s); a longer window takes the model's span at its centre (one clip) or
spread as the test views are (several). Windows start at ``0, stride, 2 stride, ...`` and end inside the video; a
video shorter than one window is one window. ``predict`` on a window cut out of the file gives the same numbers
(``tests/test_long_video.py`` cuts them with the ffmpeg CLI).

Memory stays flat in the video's length: the file is decoded once, frame by frame (PyAV), and only the frames that
windows not yet emitted need are kept (converted to RGB only if needed); windows go to the model in batches.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.decoding import EPS, VideoReadError, clip_start, frame_rotation, frame_timeline, rotate
from .data.decoding import Timeline as FrameTimeline
from .data.transforms import ClipTransform
from .inference import Preprocessing, VideoClassifier, view_scores


@dataclass(frozen=True)
class Window:
    """One window of a video: seconds from the first frame, and the timeline's frame indices of each clip."""

    start: float
    end: float
    clips: tuple[tuple[int, ...], ...]  # (clips, num_frames) indices into the file's frames, presentation order

    @property
    def first(self) -> int:
        return min(min(c) for c in self.clips)

    @property
    def last(self) -> int:
        return max(max(c) for c in self.clips)


def model_span(p: Preprocessing) -> float:
    """Seconds one clip covers: the model's frames x sampling rate at the training frame rate (as ``views``)."""
    return p.num_frames * p.sampling_rate / p.target_fps


def window_starts(duration: float, window: float, stride: float) -> Iterator[float]:
    """``0, stride, ...`` while the window ends inside the video (to within EPS); a shorter video gives one start."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be > 0 seconds, got {window} and {stride}")
    k = 0
    while k == 0 or k * stride + window <= duration + EPS:
        yield k * stride
        k += 1


def clip_frames(times: list[float], lo: float, hi: float, num_frames: int) -> tuple[int, ...]:
    """``num_frames`` indices uniform over the frames shown in ``[lo, hi)`` (to within EPS), as ``_decode_pyav``
    picks them (first + linspace over the count, so a window's choice does not depend on where it sits in the
    file); none shown there: the frame on screen at ``lo``."""
    first = bisect.bisect_left(times, lo - EPS)
    stop = bisect.bisect_left(times, hi - EPS)
    if stop <= first:
        return (max(first - 1, 0),) * num_frames
    return tuple(first + i for i in torch.linspace(0, stop - first - 1, num_frames).long().tolist())


def plan_windows(
    times: list[float], duration: float, p: Preprocessing, window: float, stride: float, num_clips: int
) -> Iterator[Window]:
    """The windows of a video whose frames are shown at ``times`` (lazily: an hour of windows is never a list)."""
    span = model_span(p)
    for s in window_starts(duration, window, stride):
        end = min(s + window, duration)
        clips = []
        for i in range(num_clips):
            lo = s + clip_start(end - s, span, i, num_clips, None)
            clips.append(clip_frames(times, lo, min(lo + span, end), p.num_frames))
        yield Window(s, end, tuple(clips))


def read_timeline(path: str | Path) -> FrameTimeline:
    """The frame times of ``path`` (demuxed, not decoded); anything unreadable is a ``VideoReadError`` naming it."""
    if not Path(path).is_file():
        raise VideoReadError(f"no such video file: {path}")
    try:
        return frame_timeline(str(path))
    except VideoReadError:
        raise
    except Exception as e:  # noqa: BLE001  PyAV's errors for junk files
        raise VideoReadError(f"cannot read {path} as a video ({type(e).__name__}: {e})") from e


class WindowStream:
    """Decode ``path`` once and yield ``(window, [clip (T, C, H, W) uint8, ...])`` in window order, holding only the
    frames of windows not yet yielded. ``peak_frames``: the most RGB frames held at once (flat in the length)."""

    def __init__(self, path: str | Path, windows: Iterable[Window]) -> None:
        self.path, self.windows = str(path), iter(windows)
        self.peak_frames = 0

    def __iter__(self) -> Iterator[tuple[Window, list[torch.Tensor]]]:
        import av

        timeline = read_timeline(self.path)
        times = timeline.times
        pending: deque[Window] = deque()
        upcoming = next(self.windows, None)
        held: dict[int, torch.Tensor] = {}  # frame index -> (H, W, C) uint8
        needed: dict[int, int] = {}  # frame index -> pending windows that use it
        degrees, j = 0.0, -1
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                tb = float(stream.time_base)
                origin = round(timeline.origin / tb)  # the first frame's pts
                for n, frame in enumerate(container.decode(stream)):
                    if n == 0:
                        degrees = frame_rotation(frame, stream)
                    idx = self._index(times, frame, origin, tb, j)
                    if idx is None:
                        continue
                    j = idx
                    while upcoming is not None and upcoming.first <= j:  # windows that start needing frames now
                        pending.append(upcoming)
                        for k in {i for c in upcoming.clips for i in c}:
                            needed[k] = needed.get(k, 0) + 1
                        upcoming = next(self.windows, None)
                    if j in needed:
                        held[j] = torch.from_numpy(frame.to_ndarray(format="rgb24"))
                        self.peak_frames = max(self.peak_frames, len(held))
                    while pending and pending[0].last <= j:
                        yield self._emit(pending.popleft(), held, needed, degrees)
                    if upcoming is None and not pending:
                        return
        except VideoReadError:
            raise
        except Exception as e:  # noqa: BLE001  PyAV's errors do not all name the file
            raise VideoReadError(f"cannot decode {self.path} ({type(e).__name__}: {e})") from e
        if pending or upcoming is not None:
            missing = (pending[0] if pending else upcoming).last
            raise VideoReadError(f"{self.path}: frame {missing} of {len(times)} was not decoded (a truncated file?)")

    @staticmethod
    def _index(times: list[float], frame, origin: int, tb: float, last: int) -> int | None:
        """The timeline index of a decoded frame, by its time; the next one if it has none; None if unknown."""
        if frame.pts is None:
            return last + 1 if last + 1 < len(times) else None
        t = (frame.pts - origin) * tb
        i = bisect.bisect_left(times, t - EPS)
        return i if i < len(times) and abs(times[i] - t) <= EPS else None

    def _emit(self, w: Window, held: dict, needed: dict, degrees: float) -> tuple[Window, list[torch.Tensor]]:
        lost = [i for c in w.clips for i in c if i not in held]
        if lost:
            raise VideoReadError(f"{self.path}: frame {lost[0]} was not decoded at its time (window at {w.start:.2f} s)")
        clips = [rotate(torch.stack([held[i] for i in c]).permute(0, 3, 1, 2), degrees) for c in w.clips]  # (T, C, H, W)
        for idx in {i for c in w.clips for i in c}:
            needed[idx] -= 1
            if not needed[idx]:
                del needed[idx], held[idx]
        return w, clips


def window_outputs(
    classifier: VideoClassifier,
    path: str | Path,
    fn: Callable[[torch.Tensor], torch.Tensor],
    window: float,
    stride: float,
    batch_size: int = 8,
    num_clips: int | None = None,
    num_crops: int | None = None,
    progress: bool = False,
    stats: dict | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[Window, torch.Tensor]]:
    """``(window, reduce(fn(views)))`` for every window of ``path``; ``fn`` maps ``(N, C, T, H, W)`` to ``(N, D)``
    and runs on ``batch_size`` windows at a time; ``reduce`` maps ``(B, V, D)`` to ``(B, D)`` (default: the mean over
    the V views). ``stats`` gets ``peak_frames`` and ``windows``."""
    p = classifier.preprocessing
    clips, crops = num_clips or p.test_num_clips, num_crops or p.test_num_crops
    tf = ClipTransform("test", p.crop_size, test_short_side=p.test_short_side, mean=p.mean, std=p.std)
    timeline = read_timeline(path)
    total = sum(1 for _ in window_starts(timeline.duration, window, stride))
    stream = WindowStream(path, plan_windows(timeline.times, timeline.duration, p, window, stride, clips))
    param = next(classifier.parameters())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=Path(path).name, unit="window", leave=False)

    def run(batch: list[tuple[Window, torch.Tensor]]) -> Iterator[tuple[Window, torch.Tensor]]:
        x = torch.cat([v for _, v in batch]).to(param.device, param.dtype)  # (B x V, C, T, H, W)
        with torch.inference_mode():
            out = fn(x)  # (B x V, D)
        out = out.reshape(len(batch), clips * crops, -1)  # (B, V, D)
        out = (reduce(out) if reduce is not None else out.mean(1)).cpu()  # (B, D)
        if bar is not None:
            bar.update(len(batch))
        yield from zip([w for w, _ in batch], out)

    batch: list[tuple[Window, torch.Tensor]] = []
    try:
        for w, frames in stream:
            views = torch.stack([tf(f, crop, crops) for f in frames for crop in range(crops)])  # (V, C, T, H, W)
            batch.append((w, views))
            if len(batch) == batch_size:
                yield from run(batch)
                batch = []
        if batch:
            yield from run(batch)
    finally:
        if bar is not None:
            bar.close()
        if stats is not None:
            stats.update(peak_frames=stream.peak_frames, windows=total)


def probabilities(classifier: VideoClassifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """The logits of each view; ``predict_timeline`` scores them over the views as ``predict`` does."""
    return classifier.model  # (N, K)


def pre_logits(classifier: VideoClassifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pooled backbone features the head sees (``forward_head(pre_logits=True)``)."""
    model = classifier.model
    return lambda x: model.forward_head(model.forward_features(x)[0], pre_logits=True)  # (N, C)


@dataclass
class Timeline:
    """Per-window class probabilities of one video."""

    video: str
    window: float
    stride: float
    starts: list[float]
    ends: list[float]
    probs: np.ndarray  # (num_windows, num_classes)
    class_names: tuple[str, ...]
    views: tuple[int, int]  # clips, crops

    def top(self, k: int) -> list[list[tuple[str, float]]]:
        idx = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]  # (N, k)
        return [[(self.class_names[i], float(row[i])) for i in ids] for row, ids in zip(self.probs, idx)]

    def change_points(self) -> list[tuple[float, str, str]]:
        """``(time, before, after)`` where the top class changes: half-way between the two windows' centres."""
        labels = self.probs.argmax(1)
        centres = [(s + e) / 2 for s, e in zip(self.starts, self.ends)]
        return [
            ((centres[i - 1] + centres[i]) / 2, self.class_names[labels[i - 1]], self.class_names[labels[i]])
            for i in range(1, len(labels))
            if labels[i] != labels[i - 1]
        ]


def predict_timeline(classifier: VideoClassifier, path: str | Path, window: float, stride: float, **kw: Any) -> Timeline:
    """Class probabilities of every window (``window_outputs``' keywords: batch size, views, progress, stats)."""
    starts, ends, rows = [], [], []
    multilabel = classifier.preprocessing.multilabel
    score = partial(view_scores, multilabel=multilabel)  # (B, V, K) -> (B, K), as ``predict``
    for w, probs in window_outputs(classifier, path, probabilities(classifier), window, stride, reduce=score, **kw):
        starts.append(w.start)
        ends.append(w.end)
        rows.append(probs.double().numpy())
    p = classifier.preprocessing
    views = (kw.get("num_clips") or p.test_num_clips, kw.get("num_crops") or p.test_num_crops)
    probs = np.stack(rows) if rows else np.zeros((0, len(p.class_names)))
    return Timeline(str(path), window, stride, starts, ends, probs, p.class_names, views)


def write_timeline(tl: Timeline, out: Path, stem: str, topk: int, model: str) -> list[Path]:
    """``stem.csv`` (start, end, top-k), ``stem.json`` (the same and the settings), ``stem.png``; returns them."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    k = min(topk, len(tl.class_names))
    top = tl.top(k)
    paths = [out / f"{stem}.csv", out / f"{stem}.json", out / f"{stem}.png"]
    with open(paths[0], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "end"] + [c for i in range(1, k + 1) for c in (f"class{i}", f"prob{i}")])
        for s, e, row in zip(tl.starts, tl.ends, top):
            writer.writerow([f"{s:.3f}", f"{e:.3f}"] + [v for name, prob in row for v in (name, f"{prob:.6f}")])
    doc = {
        "video": tl.video,
        "model": model,
        "window": tl.window,
        "stride": tl.stride,
        "views": {"clips": tl.views[0], "crops": tl.views[1]},
        "windows": [
            {"start": s, "end": e, "top": [{"class": n, "prob": p} for n, p in row]} for s, e, row in zip(tl.starts, tl.ends, top)
        ],
        "change_points": [{"time": t, "from": a, "to": b} for t, a, b in tl.change_points()],
    }
    paths[1].write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    plot_timeline(tl, paths[2])
    return paths


def plot_timeline(tl: Timeline, path: Path, max_classes: int = 8) -> None:
    """Probability over time (window centres) of the classes that reach the highest peaks, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(s + e) / 2 for s, e in zip(tl.starts, tl.ends)]
    peaks = tl.probs.max(0) if len(tl.probs) else np.zeros(len(tl.class_names))
    shown = np.argsort(-peaks, kind="stable")[:max_classes]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for c in shown:
        ax.plot(centres, tl.probs[:, c], marker="." if len(centres) < 200 else None, label=tl.class_names[c])
    ax.set(xlabel="time (s, window centre)", ylabel="probability", ylim=(0, 1), title=Path(tl.video).name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def feature_config(classifier: VideoClassifier, window: float, stride: float, clips: int, crops: int, model: str) -> dict:
    """What a feature file depends on (its JSON records it; a rerun with other settings redoes the file), as JSON
    reads it back (lists, not tuples), so a rerun compares equal. ``model``: the checkpoint's path; its size and
    modification time are recorded too, so a checkpoint retrained (or replaced) in place redoes the files."""
    config: dict[str, Any] = {
        "model": model,
        "window": window,
        "stride": stride,
        "views": {"clips": clips, "crops": crops},
        "preprocessing": {k: v for k, v in asdict(classifier.preprocessing).items() if k not in ("class_names", "multilabel")},
    }
    if Path(model).is_file():
        st = Path(model).stat()
        config["checkpoint"] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return json.loads(json.dumps(config))


def video_features(
    classifier: VideoClassifier, path: str | Path, window: float, stride: float, **kw: Any
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``([num_windows, C] float32 pooled pre-logits, [(start, end), ...])`` of one video."""
    times, rows = [], []
    for w, feat in window_outputs(classifier, path, pre_logits(classifier), window, stride, **kw):
        times.append((w.start, w.end))
        rows.append(feat.float().numpy())
    return np.stack(rows), times


def fps_of(path: str | Path) -> float:
    """Frames per second as shown (frames over the timeline's duration; exact for constant rate)."""
    tl = read_timeline(path)
    return len(tl.times) / tl.duration if tl.duration > 0 else math.nan
