#!/usr/bin/env python
"""Turn a folder-per-class tree of videos into Kinetics CSVs (``path label``) and ``classnames.txt``.

    VIDEO_DIR/{train,val[,test]}/<class name>/<video>.{mp4,webm,mkv,avi}

Classes are numbered in sorted order of the train split's folder names; class and file names may hold spaces
and non-ASCII letters ("air drumming"): the label is the last field of a line. ``--short-side 320`` re-encodes
every video to that short side (H.264, as the official pre-processing does) under ``--out/videos``; otherwise
the CSVs point at the original files (absolute paths either way). Unreadable videos and
names that cannot be a UTF-8 line are left out and listed at the end. If there is no test split, test.csv is a
copy of val.csv (the usual Kinetics protocol reports on val).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

EXTS = {".mp4", ".webm", ".mkv", ".avi", ".mov"}


def check_name(path: Path) -> str | None:
    """Why ``path`` cannot go into a CSV line (None when it can): the CSVs are UTF-8, one video per line."""
    text = str(path)
    if "\n" in text or "\r" in text:
        return "a line break in the name"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name (e.g. Latin-1): Python keeps them as surrogates
        return "the name is not valid UTF-8 (rename it)"
    return None


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from mvit_video.data.decoding import write_upright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write the CSVs into")
    parser.add_argument("--short-side", type=int, default=None, help="re-encode to this short side (e.g. 320)")
    args = parser.parse_args(argv)
    train_dir = args.video_dir / "train"
    if not train_dir.is_dir():
        return _error(
            f"{train_dir} not found: expected VIDEO_DIR/train/<class name>/<video files> "
            f"(and VIDEO_DIR/val/..., optionally VIDEO_DIR/test/...)"
        )
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        return _error(f"no class folders in {train_dir}: expected {train_dir}/<class name>/<video files>")
    for name in classes:
        if problem := check_name(Path(name)):
            return _error(f"class folder {train_dir / name!r}: {problem}")
    index = {c: i for i, c in enumerate(classes)}
    args.out.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    for split in ("train", "val", "test"):
        split_dir = args.video_dir / split
        if not split_dir.is_dir():
            continue
        rows = []
        files = sorted(p for p in split_dir.rglob("*") if p.suffix.lower() in EXTS and p.is_file())
        for video in tqdm(files, desc=split, unit="video"):
            parts = video.relative_to(split_dir).parts
            cls = parts[0]
            if len(parts) < 2 or cls not in index:
                return _error(f"{video}: class folder {cls!r} is not among the train classes ({train_dir})")
            if problem := check_name(video):
                skipped.append(f"{video!r}: {problem}")
                continue
            path = str(video.resolve())
            if args.short_side:
                rel = Path("videos", split, *parts[:-1], video.stem + ".mp4")
                if not (args.out / rel).exists():
                    try:
                        (args.out / rel).parent.mkdir(parents=True, exist_ok=True)
                        write_upright(video, args.out / rel, args.short_side)  # upright, timestamps kept
                    except Exception as e:  # noqa: BLE001  a broken download: leave it out, say so below
                        (args.out / rel).unlink(missing_ok=True)
                        skipped.append(f"{video}: {type(e).__name__}: {e}")
                        continue
                path = str((args.out / rel).resolve())
            # The label is the last field: the reader splits it off at the last space, so spaces in the path
            # ("air drumming/...") stay in the path.
            rows.append(f"{path} {index[cls]}")
        (args.out / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        print(f"{split}: {len(rows)} videos")
    if not (args.out / "test.csv").exists() and (args.out / "val.csv").exists():
        shutil.copy(args.out / "val.csv", args.out / "test.csv")
    (args.out / "classnames.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"{len(classes)} classes -> {args.out}" + (f"; {len(skipped)} videos skipped (listed above)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
