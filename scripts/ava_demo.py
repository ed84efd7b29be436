#!/usr/bin/env python
"""AVA demo: person boxes, their track ids and top actions on a video, with a trained AVA detector.

    python scripts/ava_demo.py VIDEO --ckpt AVA.ckpt --detector fasterrcnn_resnet50_fpn_v2 \
        --detector-weights fasterrcnn_resnet50_fpn_v2_coco.pth --out demo.mp4
    python scripts/ava_demo.py --ckpt AVA.ckpt --frames data/ava/frames/VIDEO_ID --boxes ava_val_v2.2.csv --out demo.mp4

Person boxes come either from a person detector run on each keyframe (one per second): any torchvision detection
model (``--detector NAME``) with its weights from a local file (``--detector-weights``, read with
``weights_only=True``; nothing is downloaded), keeping COCO persons scoring >= ``--person-score`` (0.8, as AVA's
proposals), or ``--detector module:factory``, a callable that returns a ``mvit_video.persons.PersonDetector``;
or from an AVA-format box CSV (``--boxes``: ``video_id,second,x1,y1,x2,y2[,...]`` normalised; the ground truth
or a detector's output). An IoU tracker gives the boxes ids stable across keyframes. Each keyframe is
classified from the clip around it and the frames of that second are drawn with boxes, ids and top actions.

Writes the video (``--out``), an AVA-format detections CSV (``video,sec,x1,y1,x2,y2,action,score``; default
next to ``--out``, ``.csv``) and a per-person action timeline PNG (``_timeline.png``). Frames are taken at 30 fps
(AVA's rate): a frame folder is read as 30 fps, a video is resampled to it and scaled down to a short side of
``--short-side`` (480). All frames are held in memory (about 2.2 GB a minute at 854 x 480): cut a long video first
(``ffmpeg -ss START -t SECONDS -i in.mp4 -c copy part.mp4``). Prints one JSON line per keyframe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def video_frames_at_30fps(path: Path, short_side: int | None = None) -> torch.Tensor:
    """All frames of a video resampled to 30 fps (nearest earlier frame), ``(N, C, H, W)`` uint8; frames with a
    short side above ``short_side`` are scaled down to it (all frames are held: this bounds the memory)."""
    import av
    import numpy as np
    import torch

    from mvit_video.data.ava import FPS

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = min(1.0, short_side / min(w, h)) if short_side else 1.0
        size = {"width": round(w * scale / 2) * 2, "height": round(h * scale / 2) * 2} if scale < 1 else {}
        decoded = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24", **size)) for f in container.decode(video=0)]
    if not decoded:
        raise ValueError(f"{path}: no video frames")
    times = np.array([t for t, _ in decoded])
    times -= times[0]
    grid = np.arange(0, times[-1] + 1e-6, 1 / FPS)
    idx = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(decoded) - 1)
    return torch.from_numpy(np.stack([decoded[i][1] for i in idx])).permute(0, 3, 1, 2)


def boxes_by_second(path: Path, video_id: str | None) -> dict[int, list[list[float]]]:
    """``{second: [box, ...]}`` of one video (a box listed once per action is drawn once); no score filtering.
    Without ``video_id`` the CSV must hold one video (seconds of several would mix): ValueError naming the ids."""
    from mvit_video.data.annotations import read_boxes

    rows = read_boxes(path, is_groundtruth=True)
    if video_id is None:
        ids = sorted({vid for vid, _ in rows})
        if len(ids) > 1:
            shown = ", ".join(ids[:10]) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
            raise ValueError(f"{path} holds boxes of {len(ids)} videos ({shown}): name one with --video-id")
    return {sec: [list(b) for b in boxes] for (vid, sec), boxes in sorted(rows.items()) if video_id in (None, vid)}


def colour_of(track_id: int) -> tuple[int, int, int]:
    """The drawing colour of a track (ids start at 1)."""
    return COLOURS[(track_id - 1) % len(COLOURS)]


def draw(frame: np.ndarray, boxes: list[list[float]], labels: list[list[tuple[str, float]]], ids: list[int]) -> np.ndarray:
    import numpy as np
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    d = ImageDraw.Draw(img)
    w, h = img.size
    for box, acts, tid in zip(boxes, labels, ids):
        colour = colour_of(tid)
        x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
        d.rectangle([x1, y1, x2, y2], outline=colour, width=max(3, w // 160))
        text = "\n".join([f"id {tid}"] + [f"{name} {p:.2f}" for name, p in acts])
        d.rectangle(d.multiline_textbbox((x1 + 4, y1 + 4), text, spacing=1), fill=(0, 0, 0))  # inside the outline
        d.multiline_text((x1 + 4, y1 + 4), text, fill=colour, spacing=1)
    return np.asarray(img)


def build_person_detector(name: str, weights: str | None, score: float, device: str) -> Any:
    """``module:factory`` -> ``factory()``; otherwise a torchvision detection model with local weights."""
    from mvit_video.persons import PersonDetector, TorchvisionPersonDetector

    if ":" in name:
        import importlib

        module, attr = name.split(":", 1)
        try:
            detector = getattr(importlib.import_module(module), attr)()
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--detector {name}: cannot import it ({e})") from e
        if not isinstance(detector, PersonDetector):
            raise ValueError(f"--detector {name}: {type(detector).__name__} is not callable on frames")
        return detector
    if not weights:
        raise ValueError(f"--detector {name} needs --detector-weights PATH (a local file; nothing is downloaded)")
    return TorchvisionPersonDetector(name, weights, score_threshold=score, device=device)


def plot_timeline(records: list[dict[str, Any]], action_names: dict[int, str], path: Path) -> None:
    """One row per track, one bar per keyframe coloured by its top action (bar height: its probability). The
    PNG's ``Description`` text holds the tracks and the action colours (hex), for whoever reads it back."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    from matplotlib.patches import Patch

    ids = sorted({tid for r in records for tid in r["ids"]})
    cmap = plt.get_cmap("tab20")
    colours = {a: to_hex(cmap(i % cmap.N)) for i, a in enumerate(sorted(action_names))}
    by_name = {name: a for a, name in action_names.items()}
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * max(1, len(ids))), dpi=100)
    tracks: dict[int, list[list[Any]]] = {tid: [] for tid in ids}
    for r in records:
        for tid, acts in zip(r["ids"], r["actions"]):
            name, p = acts[0]
            row = ids.index(tid)
            ax.bar(r["second"], p * 0.8, width=0.9, bottom=row - 0.4, color=colours[by_name[name]], linewidth=0)
            tracks[tid].append([r["second"], name, round(p, 4)])
    ax.set_yticks(range(len(ids)), [f"id {t}" for t in ids])
    ax.set_ylim(-0.6, max(1, len(ids)) - 0.4)
    ax.set_xlabel("second")
    ax.set_title("top action per person (bar height: probability)")
    used = sorted({by_name[a[1]] for t in tracks.values() for a in t})
    ax.legend(handles=[Patch(color=colours[a], label=action_names[a]) for a in used], loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    meta = {"tracks": {str(k): v for k, v in tracks.items()}, "colours": {action_names[a]: colours[a] for a in used}}
    fig.savefig(path, metadata={"Description": json.dumps(meta)})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("video_path", nargs="?", metavar="VIDEO", help="a video file")
    source.add_argument("--video", help="a video file (same as VIDEO)")
    source.add_argument("--frames", help="a folder of frames at 30 fps (sorted by name)")
    parser.add_argument("--ckpt", required=True, help="a detector checkpoint written by train.py experiment=ava_...")
    parser.add_argument("--boxes", help="AVA-format CSV with the person boxes (instead of --detector)")
    parser.add_argument("--detector", help="a torchvision detection model name, or module:factory of a person detector")
    parser.add_argument("--detector-weights", help="the torchvision model's weights (a local state-dict file)")
    parser.add_argument("--person-score", type=float, default=None, help="keep persons scoring >= this (default 0.8)")
    parser.add_argument("--track-iou", type=float, default=0.3, help="the tracker's least IoU to keep an id")
    parser.add_argument("--track-max-age", type=int, default=2, help="keyframes a track may miss before it ends")
    parser.add_argument("--video-id", default=None, help="the CSV's video id (default: the file's or folder's name)")
    parser.add_argument("--first-second", type=int, default=None, help="second of the first frame (frames: 900, video: 0)")
    parser.add_argument("--topk", type=int, default=2)
    parser.add_argument(
        "--short-side", type=int, default=480, help="scale a video's frames down to this short side (memory; 0: keep)"
    )
    parser.add_argument("--device", default="cpu", help="where the person detector runs (cpu, cuda)")
    parser.add_argument("--out", required=True, help="output video (.mp4)")
    parser.add_argument("--csv", default=None, help="output detections CSV (default: --out with .csv)")
    parser.add_argument("--timeline", default=None, help="output timeline PNG (default: --out's name + _timeline.png)")
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error(f"--topk must be >= 1, got {args.topk}")
    if (args.boxes is None) == (args.detector is None):
        parser.error("give person boxes with exactly one of --boxes CSV or --detector NAME (with --detector-weights)")
    if args.short_side < 0:
        parser.error(f"--short-side must be >= 0, got {args.short_side}")
    if args.person_score is not None and not 0 <= args.person_score < 1:
        parser.error(f"--person-score must be in [0, 1), got {args.person_score}")
    import numpy as np
    import torch  # after the arguments: --help and usage errors answer at once
    from tqdm import tqdm

    from mvit_video.data.ava import FIRST_SECOND, FPS
    from mvit_video.data.decoding import read_frames
    from mvit_video.data.synthetic import write_video
    from mvit_video.inference import CheckpointMetadataError, load_detector
    from mvit_video.metrics.ava_frame_map import detection_csv_lines
    from mvit_video.models.convert import CheckpointReadError
    from mvit_video.persons import PERSON_SCORE, DetectorWeightsError, IoUTracker

    persons = None
    if args.detector:  # first: its name and weights file are checked at once
        try:
            score = PERSON_SCORE if args.person_score is None else args.person_score
            persons = build_person_detector(args.detector, args.detector_weights, score, args.device)
        except (ValueError, DetectorWeightsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    video = args.video_path or args.video
    if args.boxes:  # also before the checkpoint and the frames are read; a frame folder's name is its video id
        wanted = args.video_id or (Path(args.frames).name if args.frames else None)
        try:
            given_boxes = boxes_by_second(Path(args.boxes), wanted)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if not given_boxes:
            print(f"error: no boxes{f' for video id {wanted!r}' if wanted else ''} in {args.boxes}", file=sys.stderr)
            return 2
    try:
        detector = load_detector(args.ckpt)
    except (FileNotFoundError, CheckpointReadError, CheckpointMetadataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.frames:
        paths = sorted(p for p in Path(args.frames).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        frames = read_frames(paths)  # (N, C, H, W)
        video_id = args.video_id or Path(args.frames).name
        first_second = FIRST_SECOND if args.first_second is None else args.first_second
    else:
        if not Path(video).is_file():
            print(f"error: {video}: no such video file", file=sys.stderr)
            return 2
        frames = video_frames_at_30fps(Path(video), args.short_side)
        video_id = args.video_id or Path(video).stem
        first_second = 0 if args.first_second is None else args.first_second
    if persons is None:
        per_second = given_boxes
    else:
        keys = list(range(0, len(frames), FPS))  # one keyframe per second
        found = persons(frames[keys])  # per keyframe: (boxes (K, 4), scores (K,))
        per_second = {first_second + i: b.tolist() for i, (b, _) in enumerate(found)}
    tracker = IoUTracker(min_iou=args.track_iou, max_age=args.track_max_age)
    action_ids = sorted(detector.action_names)
    canvas = [f.permute(1, 2, 0).numpy() for f in frames]
    rows: list[str] = []
    records: list[dict[str, Any]] = []
    for sec, boxes in tqdm(per_second.items(), desc="keyframes", file=sys.stderr, disable=None):
        key = (sec - first_second) * FPS
        if not 0 <= key < len(frames):
            continue
        ids = tracker.update(torch.tensor(boxes).reshape(-1, 4))
        labels: list[list[tuple[str, float]]] = []
        if boxes:  # a keyframe without persons is reported, with nothing to classify
            clip = frames[detector.frame_indices(key, len(frames))]
            probs = detector.detect(clip, torch.tensor(boxes))  # (K, 80)
            labels = detector.top_actions(probs, args.topk)
            for i in range(max(0, key - FPS // 2), min(len(frames), key + FPS // 2)):
                canvas[i] = draw(canvas[i], boxes, labels, ids)
            scores = probs[:, [a - 1 for a in action_ids]].double().tolist()  # (K, A): training's CSV columns
            rows += detection_csv_lines([(video_id, sec, box, p) for box, p in zip(boxes, scores)], action_ids)
        records.append({"second": sec, "boxes": boxes, "ids": ids, "actions": labels})
        print(json.dumps(records[-1]))
    out = Path(args.out)
    h, w = canvas[0].shape[:2]
    write_video(out, np.stack(canvas)[:, : h // 2 * 2, : w // 2 * 2], FPS)  # yuv420p: even sizes
    csv_path = Path(args.csv) if args.csv else out.with_suffix(".csv")
    csv_path.write_text("".join(r + "\n" for r in rows))
    timeline = Path(args.timeline) if args.timeline else out.with_name(out.stem + "_timeline.png")
    plot_timeline(records, detector.action_names, timeline)
    tracks = len({t for r in records for t in r["ids"]})
    print(f"wrote {out}: {len(canvas)} frames at {FPS} fps; {csv_path}: {len(rows)} rows; {timeline}: {tracks} tracks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
