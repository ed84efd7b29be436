#!/usr/bin/env python
"""Turn a folder-per-class tree of videos into Kinetics CSVs (``path label``) and ``classnames.txt``.

    VIDEO_DIR/{train,val[,test]}/<class name>/<video>.{mp4,webm,mkv,avi}

Classes are numbered in sorted order of the train split's folder names. ``--short-side 320`` re-encodes every
video to that short side (H.264, as the official pre-processing does) under ``--out/videos``; otherwise the CSVs
point at the original files. If there is no test split, test.csv is a copy of val.csv (the usual Kinetics
protocol reports on val).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from tqdm import tqdm

EXTS = {".mp4", ".webm", ".mkv", ".avi", ".mov"}


def reencode(src: Path, dst: Path, short_side: int) -> None:
    """Re-encode with PyAV to H.264 at the given short side, keeping the frame rate."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        w, h = vin.codec_context.width, vin.codec_context.height
        scale = short_side / min(w, h)
        ow, oh = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
        vout = out.add_stream("libx264", rate=vin.average_rate or 30)
        vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
        for frame in inp.decode(vin):
            for packet in vout.encode(frame.reformat(width=ow, height=oh, format="yuv420p")):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write the CSVs into")
    parser.add_argument("--short-side", type=int, default=None, help="re-encode to this short side (e.g. 320)")
    args = parser.parse_args()
    if not (args.video_dir / "train").is_dir():
        raise SystemExit(f"{args.video_dir}/train not found: expected VIDEO_DIR/train/<class>/<video files>")
    classes = sorted(p.name for p in (args.video_dir / "train").iterdir() if p.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        split_dir = args.video_dir / split
        if not split_dir.is_dir():
            continue
        rows = []
        files = sorted(p for p in split_dir.rglob("*") if p.suffix.lower() in EXTS)
        for video in tqdm(files, desc=split):
            cls = video.parent.name
            if cls not in index:
                raise SystemExit(f"{video}: class folder {cls!r} is not among the train classes")
            path = video.resolve()
            if args.short_side:
                path = args.out / "videos" / split / cls / (video.stem + ".mp4")
                if not path.exists():
                    try:
                        reencode(video, path, args.short_side)
                    except Exception as e:  # noqa: BLE001
                        print(f"skipping unreadable {video}: {e}")
                        continue
            rows.append(f"{path} {index[cls]}")
        (args.out / f"{split}.csv").write_text("\n".join(rows) + "\n")
        print(f"{split}: {len(rows)} videos")
    if not (args.out / "test.csv").exists() and (args.out / "val.csv").exists():
        shutil.copy(args.out / "val.csv", args.out / "test.csv")
    (args.out / "classnames.txt").write_text("\n".join(classes) + "\n")
    print(f"{len(classes)} classes -> {args.out}")


if __name__ == "__main__":
    main()
