#!/usr/bin/env python
"""Per-window features of many videos, for temporal action detection tools (ActionFormer and the like).

    python scripts/extract_features.py VIDEO... | DIR... --ckpt CKPT --out OUT [--window 2.0 --stride 1.0]
        [--batch-size 8] [--clips 1 --crops 1]

For each video, OUT/<name>.npy holds float32 [num_windows, C]: the backbone's pooled pre-logits
(forward_head(pre_logits=True)) of each window, averaged over its views; OUT/<name>.json holds the window times
(start, end seconds), fps, model and preprocessing. <name> is the file's path below the DIR given (without its
extension), or its stem for a file given by name. Windows are mvit_video.timeline's (those of predict.py --window).

Resumable: a video whose .npy and .json exist, with the same settings, is skipped; each file is written to a
temporary name and renamed, the .json last, so an interrupted run leaves no half-written output. Failures are
named in OUT/failures.txt and on stderr, the other videos are still done, and the exit code is 1.
Views default to one centre clip and crop (what feature extractors for detection take per snippet).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mvit_video.cli import positive_float, positive_int

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")


def find_videos(inputs: list[str]) -> list[tuple[str, Path]]:
    """``(name, path)`` of every video: files as given, folders searched recursively for video suffixes. Two
    videos with one name are an error (their outputs would overwrite each other)."""
    found: list[tuple[str, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            found += [(p.relative_to(item).with_suffix("").as_posix(), p) for p in files]
        else:
            found.append((item.stem, item))  # a missing file fails later, named in the failures
    seen: dict[str, Path] = {}
    for name, path in found:
        if name in seen:
            raise ValueError(f"two videos would write {name}.npy: {seen[name]} and {path}")
        seen[name] = path
    return found


def is_done(npy: Path, meta: Path, config: dict) -> bool:
    """Both outputs there (the .json is renamed last), written with these settings, the array complete."""
    import numpy as np

    if not (npy.is_file() and meta.is_file()):
        return False
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
        shape = np.load(npy, mmap_mode="r").shape
    except (OSError, ValueError):
        return False
    return doc.get("config") == config and list(shape) == [len(doc.get("windows", [])), doc.get("dim")]


def write_atomic(path: Path, write) -> None:
    """``write(tmp_path)`` then rename onto ``path`` (atomic on one file system)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def extract_one(model, path: Path, npy: Path, meta: Path, config: dict, args: argparse.Namespace) -> int:
    """Write one video's features and JSON; returns the number of windows."""
    import numpy as np

    from mvit_video import timeline

    feats, times = timeline.video_features(
        model, path, args.window, args.stride, batch_size=args.batch_size, num_clips=args.clips, num_crops=args.crops
    )  # (N, C)
    npy.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            np.save(f, feats)

    write_atomic(npy, save)
    doc = {
        "video": str(path),
        "fps": timeline.fps_of(path),
        "dim": int(feats.shape[1]),
        "windows": [{"start": s, "end": e} for s, e in times],
        "config": config,
    }
    write_atomic(meta, lambda tmp: tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8"))
    return len(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", help="video files and/or folders of videos")
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--window", type=positive_float, default=2.0, help="seconds per window (default 2)")
    parser.add_argument("--stride", type=positive_float, default=None, help="seconds between windows (default: --window)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    parser.add_argument("--clips", type=positive_int, default=1, help="temporal clips per window (default 1)")
    parser.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per window (default 1)")
    args = parser.parse_args(argv)
    args.stride = args.stride or args.window
    from tqdm import tqdm

    from mvit_video.inference import CheckpointMetadataError, load  # torch: after the arguments
    from mvit_video.models.convert import CheckpointReadError
    from mvit_video.timeline import feature_config

    try:
        videos = find_videos(args.videos)
        model = load(args.ckpt)
    except (ValueError, FileNotFoundError, CheckpointReadError, CheckpointMetadataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = feature_config(model, args.window, args.stride, args.clips, args.crops, str(args.ckpt))
    failures: list[tuple[Path, str]] = []
    done = skipped = 0
    try:
        for name, path in tqdm(videos, desc="videos", unit="video", disable=None):
            npy, meta = out / f"{name}.npy", out / f"{name}.json"
            if is_done(npy, meta, config):
                skipped += 1
                continue
            try:
                extract_one(model, path, npy, meta, config, args)
                done += 1
            except Exception as e:  # noqa: BLE001  one bad file must not stop thousands of others
                failures.append((path, f"{type(e).__name__}: {e}"))
                print(f"failed: {path}: {type(e).__name__}: {e}", file=sys.stderr)
    except KeyboardInterrupt:  # Ctrl-C: what is written is complete, so the same command resumes
        print(f"interrupted after {done} done ({skipped} already done): run the same command again to resume", file=sys.stderr)
        return 130
    failed_log = out / "failures.txt"
    if failures:
        failed_log.write_text("".join(f"{p}\t{msg}\n" for p, msg in failures), encoding="utf-8")
    else:
        failed_log.unlink(missing_ok=True)
    print(f"{done} done, {skipped} already done, {len(failures)} failed" + (f" (listed in {failed_log})" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
