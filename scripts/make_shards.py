#!/usr/bin/env python
"""Copy a dataset into LitData shards (a local folder or s3://bucket/prefix) for ``data.source=stream``.

    python scripts/make_shards.py ROOT --out s3://bucket/k400                  # Kinetics CSVs under ROOT
    python scripts/make_shards.py ROOT --out shards/ssv2 --data ssv2 --set source=video
    python scripts/make_shards.py ROOT --out s3://bucket/k400-320 --short-side 320

Any clip dataset of ``conf/data`` whose items are video files (``--data NAME``, default kinetics; ``--set KEY=VALUE``
for its other options): the items of each split are read as training reads them, and each file's bytes are stored
as they are (no re-encoding), with its key (path under ROOT), label and sha256; ``--short-side N`` stores an H.264
copy at that short side instead (smaller shards; files already that small are kept as they are). The shards of a
split hold the items in the split's order, so a streamed run sees what a run on the files sees.

Resumable: run the same command again after an interruption. A finished split is skipped; an unfinished one goes
on from LitData's checkpoint (``OUT/<split>/.checkpoints``; give the same ``--workers``), the sha256 of what was
written being logged in ``--work-dir``. ``OUT/manifest.json`` is written last: counts per split and class, total
bytes, each sample's key, label, sha256 and size; splits already in it (an earlier ``--splits`` into the same
``--out``) are kept, so ``--splits train`` then ``--splits val test`` give one manifest of three splits. S3
credentials and endpoint: ``AWS_*`` environment variables (``AWS_ENDPOINT_URL`` for MinIO and other S3-compatible
stores).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def previous_splits(streaming, out: str, class_names: list[str], short_side: int | None, storage_options) -> dict:
    """The splits in an existing ``OUT/manifest.json`` (``--splits train`` then ``--splits val test``: one manifest
    with all three). A ``ValueError`` naming it if its class names or ``--short-side`` differ from this run's."""
    path = streaming.join(out, streaming.MANIFEST)
    if not streaming.exists(path, storage_options):
        return {}
    old = streaming.read_manifest(out, storage_options)
    if old.class_names != class_names:
        raise ValueError(
            f"{path} was written for other classes ({len(old.class_names)}: {old.class_names[:3]}...), this run has "
            f"{len(class_names)} ({class_names[:3]}...): use another --out"
        )
    if old.raw.get("short_side") != short_side:
        raise ValueError(f"{path} holds --short-side {old.raw.get('short_side')}, this run {short_side}: use another --out")
    return dict(old.splits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the dataset's root, as data.root")
    parser.add_argument("--out", required=True, help="s3://bucket/prefix or a local folder")
    parser.add_argument("--data", default="kinetics", help="a conf/data config (default: kinetics)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other data options (num_classes=...)")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--short-side", type=positive_int, default=None, help="store H.264 copies at this short side")
    parser.add_argument("--workers", type=positive_int, default=1, help="processes reading (and re-encoding) files")
    parser.add_argument("--chunk-bytes", default="64MB", help="LitData chunk size (default 64MB)")
    parser.add_argument("--work-dir", default=None, help="sha256 logs kept for a resume (default: ~/.cache/mvit_video)")
    args = parser.parse_args(argv)

    from mvit_video.data import streaming

    try:
        dm = streaming.compose_datamodule(args.data, args.root, args.set)
        dm.check_files(train="train" in args.splits or "val" in args.splits, test="test" in args.splits)
        class_names = [dm.class_names[i] for i in range(len(dm.class_names))]
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out.rstrip("/")
    try:
        kept = previous_splits(streaming, out, class_names, args.short_side, dm.storage_options)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = Path(args.work_dir or Path.home() / ".cache" / "mvit_video" / "shards" / hashlib.sha1(out.encode()).hexdigest()[:16])
    splits, written = {}, {}
    for split in args.splits:
        items = dm.items(split)
        if any(not isinstance(source, (str, Path)) for source, _ in items):
            print(
                f"error: {split} items are not video files (frame folders?); shard the videos (e.g. --set source=video)",
                file=sys.stderr,
            )
            return 2
        same = next((s for s, prev in written.items() if prev == items), None)
        if same is not None:  # SSv2's test split is its validation split: stored once
            splits[split] = {**{k: v for k, v in splits[same].items() if k != "samples"}, "alias": same}
            continue
        missing = [str(source) for source, _ in items if not Path(source).is_file()]
        if missing:
            print(f"error: {len(missing)} {split} videos not found (first: {missing[0]})", file=sys.stderr)
            return 2
        keyed = [(streaming.file_key(source, dm.root), str(source), label) for source, label in items]
        print(f"{split}: {len(keyed)} videos -> {streaming.join(out, split)}", file=sys.stderr)
        samples = streaming.write_split(
            keyed, streaming.join(out, split), work / split, args.short_side, args.workers, args.chunk_bytes, dm.storage_options
        )
        splits[split], written[split] = streaming.manifest_entry(samples, class_names), items
    body = {
        "class_names": class_names,
        "dataset": f"{type(dm).__module__}.{type(dm).__name__}",
        "short_side": args.short_side,
        "splits": {**kept, **splits},  # the splits of earlier runs into the same --out, rewritten ones replaced
    }
    streaming.write_manifest(out, body, dm.storage_options)
    for split, entry in splits.items():
        print(
            f"{split}: {entry['count']} videos, {entry['bytes'] / 1e6:.1f} MB"
            + (f" (= {entry['alias']})" if "alias" in entry else "")
        )
    print(f"manifest: {streaming.join(out, streaming.MANIFEST)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
