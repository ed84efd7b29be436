#!/usr/bin/env python
"""Clips/s of the training loader reading the files vs streaming the same videos from shards, same decoder.

    python scripts/bench_stream.py ROOT --uri s3://bucket/k400 --set num_classes=400
    python scripts/bench_stream.py ROOT --local-s3 --set num_classes=8     # shards in a local S3 server (moto)

``--local-s3`` starts moto's S3 server on 127.0.0.1, writes ROOT's train split into it with make_shards' code and
streams from there: the S3 API's overhead (HTTP, range reads, checksums) without a network. Both loaders are the
training loader of ``--data`` (default kinetics; ``--set KEY=VALUE`` for its options), with ``--workers`` workers,
and read the same clips in the same order; after ``--warmup`` batches, ``--batches`` batches are timed. Prints one
row per source and the ratio stream / files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def clips_per_second(dm, batches: int, warmup: int) -> tuple[float, int]:
    """Clips/s of ``dm``'s training loader over ``batches`` batches after ``warmup`` (the workers' start)."""
    import torch

    torch.manual_seed(0)  # the sampler's order: the same clips for both sources
    dm.setup("fit")
    train = dm.train_dataloader()

    def epochs():
        for epoch in range(10**6):
            train.sampler.set_epoch(epoch)
            yield from train

    loader = epochs()
    for _ in range(warmup):
        next(loader)
    clips, start = 0, time.perf_counter()
    for _ in range(batches):
        clips += next(loader)["video"].shape[0]
    return clips / (time.perf_counter() - start), clips


def local_s3(root: str, data: str, overrides: list[str], work: Path):
    """moto's S3 server on a free port with ROOT's train split as shards: (server, s3 URI)."""
    import os
    import socket
    import uuid

    import boto3
    from moto.server import ThreadedMotoServer

    from mvit_video.data import streaming

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    boto3.client("s3").create_bucket(Bucket="bench")
    # A fresh prefix per run: moto keeps its buckets in process memory, so a second run in one process (the tests)
    # would find the first one's finished shards without their sha256 logs.
    uri = f"s3://bench/shards-{uuid.uuid4().hex[:8]}"
    dm = streaming.compose_datamodule(data, root, overrides)
    dm.check_files(test=False)
    names = [dm.class_names[i] for i in range(len(dm.class_names))]
    splits = {}
    for split in ("train", "val"):  # val: check_files of the streamed datamodule reads it
        keyed = [(streaming.file_key(src, dm.root), str(src), label) for src, label in dm.items(split)]
        samples = streaming.write_split(keyed, streaming.join(uri, split), work / split)
        splits[split] = streaming.manifest_entry(samples, names)
    streaming.write_manifest(uri, {"class_names": names, "splits": splits, "short_side": None})
    return server, uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the dataset's root (the files)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--uri", help="its shards (s3://bucket/prefix or a folder), made by make_shards.py")
    where.add_argument("--local-s3", action="store_true", help="make the shards in a local moto S3 server first")
    parser.add_argument("--data", default="kinetics")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="data options (num_classes=...)")
    parser.add_argument("--decoder", default="pyav", help="the decoder of both loaders (default pyav)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    from mvit_video.data import streaming

    common = [*args.set, f"decoder={args.decoder}", f"num_workers={args.workers}", f"batch_size={args.batch_size}"]
    with tempfile.TemporaryDirectory() as tmp:
        server, uri = local_s3(args.root, args.data, args.set, Path(tmp)) if args.local_s3 else (None, args.uri)
        try:
            files = streaming.compose_datamodule(args.data, args.root, [*common, "synthetic=null"])
            stream = streaming.compose_datamodule(
                args.data, args.root, [*common, "synthetic=null", "source=stream", f"uri={uri}", f"cache_dir={tmp}/cache"]
            )
            rows = []
            for name, dm in (("files", files), (f"stream {uri}", stream)):
                dm.check_files(test=False)
                rate, clips = clips_per_second(dm, args.batches, args.warmup)
                rows.append((name, rate, clips))
        finally:
            if server is not None:
                server.stop()
    print("| source | decoder | workers | clips timed | clips/s |\n|---|---|---|---|---|")
    for name, rate, clips in rows:
        print(f"| {name} | {args.decoder} | {args.workers} | {clips} | {rate:.1f} |")
    print(f"stream / files: {rows[1][1] / rows[0][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
