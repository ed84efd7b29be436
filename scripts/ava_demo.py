#!/usr/bin/env python
"""AVA demo: draw person boxes and their top actions on a video, with a trained detector.

    python scripts/ava_demo.py --ckpt DETECTOR.ckpt --frames data/ava/frames/VIDEO_ID --boxes ava_val_v2.2.csv \
        --video-id VIDEO_ID --out demo.mp4
    python scripts/ava_demo.py --ckpt DETECTOR.ckpt --video clip.mp4 --boxes my_boxes.csv --first-second 0 --out demo.mp4

Boxes come from an AVA-format CSV (``video_id,second,x1,y1,x2,y2[,...]`` normalised; the ground truth or a person
detector's output): each listed keyframe second is classified from the clip around it, and the frames of that
second are drawn with the boxes and their top actions. Frames are taken at 30 fps (AVA's rate): a frame folder
is read as 30 fps, a video is resampled to it. Prints one JSON line per keyframe with the actions drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def video_frames_at_30fps(path: Path) -> torch.Tensor:
    """All frames of a video resampled to 30 fps (nearest earlier frame), ``(N, C, H, W)`` uint8."""
    import av
    import numpy as np
    import torch

    from mvit_video.data.ava import FPS

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    if not decoded:
        raise ValueError(f"{path}: no video frames")
    times = np.array([t for t, _ in decoded])
    times -= times[0]
    grid = np.arange(0, times[-1] + 1e-6, 1 / FPS)
    idx = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(decoded) - 1)
    return torch.from_numpy(np.stack([decoded[i][1] for i in idx])).permute(0, 3, 1, 2)


def boxes_by_second(path: Path, video_id: str | None) -> dict[int, list[list[float]]]:
    """``{second: [box, ...]}`` of one video (a box listed once per action is drawn once); no score filtering."""
    from mvit_video.data.annotations import read_boxes

    rows = read_boxes(path, is_groundtruth=True)
    return {sec: [list(b) for b in boxes] for (vid, sec), boxes in sorted(rows.items()) if video_id in (None, vid)}


def draw(frame: np.ndarray, boxes: list[list[float]], labels: list[list[tuple[str, float]]]) -> np.ndarray:
    import numpy as np
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    d = ImageDraw.Draw(img)
    w, h = img.size
    for j, (box, acts) in enumerate(zip(boxes, labels)):
        colour = COLOURS[j % len(COLOURS)]
        x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
        d.rectangle([x1, y1, x2, y2], outline=colour, width=max(1, w // 160))
        for i, (name, p) in enumerate(acts):
            d.text((x1 + 2, y1 + 2 + 10 * i), f"{name} {p:.2f}", fill=colour)
    return np.asarray(img)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a detector checkpoint written by train.py experiment=ava_...")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--frames", help="a folder of frames at 30 fps (sorted by name)")
    source.add_argument("--video", help="a video file")
    parser.add_argument("--boxes", required=True, help="AVA-format CSV with the person boxes")
    parser.add_argument("--video-id", default=None, help="rows of this video id (default: the frame folder's name)")
    parser.add_argument("--first-second", type=int, default=900, help="the second of the first frame (AVA: 900)")
    parser.add_argument("--topk", type=int, default=2)
    parser.add_argument("--out", required=True, help="output video (.mp4)")
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error(f"--topk must be >= 1, got {args.topk}")
    import numpy as np
    import torch  # after the arguments: --help and usage errors answer at once

    from mvit_video.data.ava import FPS
    from mvit_video.data.decoding import read_frames
    from mvit_video.data.synthetic import write_video
    from mvit_video.inference import CheckpointMetadataError, load_detector
    from mvit_video.models.convert import CheckpointReadError

    try:
        detector = load_detector(args.ckpt)
    except (FileNotFoundError, CheckpointReadError, CheckpointMetadataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.frames:
        paths = sorted(p for p in Path(args.frames).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        frames = read_frames(paths)  # (N, C, H, W)
        video_id = args.video_id or Path(args.frames).name
    else:
        frames = video_frames_at_30fps(Path(args.video))
        video_id = args.video_id
    per_second = boxes_by_second(Path(args.boxes), video_id)
    if not per_second:
        print(f"error: no boxes for video id {video_id!r} in {args.boxes}", file=sys.stderr)
        return 2
    canvas = [f.permute(1, 2, 0).numpy() for f in frames]
    for sec, boxes in per_second.items():
        key = (sec - args.first_second) * FPS
        if not 0 <= key < len(frames):
            continue
        clip = frames[detector.frame_indices(key, len(frames))]
        labels = detector.top_actions(detector.detect(clip, torch.tensor(boxes)), args.topk)
        for i in range(max(0, key - FPS // 2), min(len(frames), key + FPS // 2)):
            canvas[i] = draw(canvas[i], boxes, labels)
        print(json.dumps({"second": sec, "boxes": boxes, "actions": labels}))
    h, w = canvas[0].shape[:2]
    write_video(Path(args.out), np.stack(canvas)[:, : h // 2 * 2, : w // 2 * 2], FPS)  # yuv420p: even sizes
    print(f"wrote {args.out}: {len(canvas)} frames at {FPS} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
