"""Datasets as shards in object storage (S3 or a local folder), written and read with LitData.

Why LitData and not WebDataset: LitData is Lightning's own streaming library, writes chunks of any Python sample to a
local folder or S3/GCS (``litdata.optimize``, resumable with ``use_checkpoint``) and reads any sample by index
(``StreamingDataset[i]``: LitData 0.2.76 reads the sample's byte range of its chunk; only the index is cached on
local disk). Random access is what
keeps our exact resume: the order of an epoch, every sample's augmentation seed and the mid-epoch position stay
ours (``sampling.ResumableSampler``), so a streamed run sees the same clips in the same order as a run on the files,
and resumes to the sample. WebDataset reads tar shards as a stream: its order is the shards' order shuffled in a
buffer, which depends on the workers and cannot be resumed in the middle of an epoch. LitData's own
``StreamingDataLoader.state_dict`` resumes too, but in its own order: chunk-wise shuffles that depend on the number
of workers and ranks, not the order and seeds a run on the files has.

Layout of ``URI`` (made by ``scripts/make_shards.py``)::

    URI/manifest.json       counts per split and class, class names, each sample's key, label, sha256, size
    URI/{train,val,test}/   a LitData dataset per split: {"key", "label", "sha256", "video": the file's bytes}

Sample ``i`` of a split is item ``i`` of the datamodule's list of that split (the CSV's line order), so the dataset
over the shards indexes exactly as the one over the files. Reading checks every sample's key and sha256.

S3: credentials and the endpoint come from the usual environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL`` for an S3-compatible store such as MinIO), or ``data.storage_options`` (LitData's, e.g.
``{endpoint_url: ...}``). LitData uploads and fetches chunks with obstore, which refuses plain ``http://`` endpoints
unless told, and LitData 0.2.76 passes obstore client options that leave no way to tell it; ``allow_http_endpoint``
adds ``allow_http`` to them for an ``http://`` endpoint (a local MinIO or moto server).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .decoding import VideoBytes, VideoReadError

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT = "mvit_video shards 1"
SPLITS = ("train", "val", "test")


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def join(uri: str, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *parts])


def endpoint(storage_options: dict | None = None) -> str | None:
    """The S3 endpoint in use: ``storage_options['endpoint_url']``, else boto3's environment variables."""
    options = storage_options or {}
    return options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def allow_http_endpoint(storage_options: dict | None = None) -> None:
    """Let LitData's obstore client reach a plain ``http://`` endpoint (see the module's docstring); a no-op for
    https or without obstore. Called in every process that reads or writes (DataLoader workers included)."""
    url = endpoint(storage_options)
    if not url or not url.startswith("http://"):
        return
    from litdata.streaming import downloader

    options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
    if isinstance(options, dict):
        options["allow_http"] = True


def _s3_client(storage_options: dict | None):
    try:
        import boto3
    except ImportError as e:
        raise ImportError("s3:// URIs need boto3: pip install 'mvit_video[stream]'") from e
    return boto3.client("s3", endpoint_url=endpoint(storage_options))


def _bucket_key(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"only s3:// or local paths are supported, got {uri}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def read_bytes(uri: str, storage_options: dict | None = None) -> bytes:
    """A whole object (``s3://``) or file; FileNotFoundError naming it if there is none."""
    if not is_remote(uri):
        return Path(uri.removeprefix("file://")).read_bytes()
    bucket, key = _bucket_key(uri)
    client = _s3_client(storage_options)
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey as e:
        raise FileNotFoundError(f"no object {uri}") from e
    except client.exceptions.NoSuchBucket as e:
        raise FileNotFoundError(f"no bucket for {uri}") from e


def write_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    if not is_remote(uri):
        path = Path(uri.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a manifest
        return
    bucket, key = _bucket_key(uri)
    _s3_client(storage_options).put_object(Bucket=bucket, Key=key, Body=data)


def exists(uri: str, storage_options: dict | None = None) -> bool:
    if not is_remote(uri):
        return Path(uri.removeprefix("file://")).exists()
    bucket, key = _bucket_key(uri)
    client = _s3_client(storage_options)
    try:
        client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


# Reading -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What ``URI/manifest.json`` holds: per split, ``samples`` as ``[key, label, sha256, bytes]`` in item order."""

    uri: str
    class_names: list[str]
    splits: dict[str, dict[str, Any]]
    raw: dict[str, Any]

    def split_uri(self, split: str) -> str:
        """The LitData dataset of ``split`` (a split stored once for two, as SSv2's val and test, says ``alias``)."""
        return join(self.uri, self.splits[split].get("alias", split))

    def samples(self, split: str) -> list[list]:
        entry = self.splits[split]
        return self.splits[entry["alias"]]["samples"] if "alias" in entry else entry["samples"]


def read_manifest(uri: str, storage_options: dict | None = None) -> Manifest:
    """The manifest of the shards at ``uri``; an error naming it and how to make one if it is missing or not ours."""
    path = join(uri, MANIFEST)
    try:
        raw = json.loads(read_bytes(path, storage_options))
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"no shards at {uri}: {path} not found (data.uri). Make them with:\n"
            f"  python scripts/make_shards.py DATA_ROOT --out {uri}"
        ) from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from e
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: format {raw.get('format')!r}, expected {FORMAT!r} (written by scripts/make_shards.py)")
    return Manifest(uri, list(raw["class_names"]), raw["splits"], raw)


@dataclass(frozen=True)
class ShardSample:
    """An item's source in a dataset over shards: sample ``index`` of the LitData dataset at ``uri``, which must
    hold the file ``key`` with that ``sha256``. Stands for ``key`` in messages (``clips.source_name``)."""

    uri: str
    index: int
    key: str
    sha256: str

    def __str__(self) -> str:
        return self.key


_OPEN: dict[tuple[int, str, str | None], Any] = {}  # (process id, split URI, cache) -> its StreamingDataset


def open_split(uri: str, cache_dir: str | None = None, storage_options: dict | None = None):
    """The LitData dataset of one split, opened once per process (each DataLoader worker opens its own). Opening
    is serialised by a file lock: workers and ranks share the cache, and LitData's check for the index there races
    with another process downloading it ("doesn't contain any index.json file")."""
    key = (os.getpid(), uri, cache_dir)
    if key not in _OPEN:
        try:
            from filelock import FileLock
            from litdata import StreamingDataset
        except ImportError as e:
            raise ImportError("data.source=stream needs litdata: pip install 'mvit_video[stream]'") from e
        allow_http_endpoint(storage_options)
        name = hashlib.sha1(uri.encode()).hexdigest()[:16]
        cache = None
        if cache_dir is not None:  # one folder per split: LitData keys its cache by the folder, not the URI
            cache = str(Path(cache_dir) / name)
            Path(cache).mkdir(parents=True, exist_ok=True)
        lock = Path(cache_dir or tempfile.gettempdir()) / f"mvit_video-{name}.lock"
        with FileLock(str(lock)):
            _OPEN[key] = StreamingDataset(uri, cache_dir=cache, storage_options=storage_options or {})
    return _OPEN[key]


class StorageError(RuntimeError):
    """The shards could not be read as the manifest lists them: storage unreachable or refusing (timeouts, bad
    credentials), a missing chunk, or shards and manifest from different runs. Not an unreadable video: it stops
    the run (``ClipDataset.get`` re-raises it) rather than shrinking the test set or changing the training order."""


def fetch(sample: ShardSample, cache_dir: str | None = None, storage_options: dict | None = None) -> VideoBytes:
    """The file's bytes from its shard, checked: the key and sha256 the manifest lists for it. Raises
    ``StorageError`` when the shard cannot be read or holds another key, ``VideoReadError`` on a sha256 mismatch
    (the bytes arrived, but not the file's: that one video is unreadable)."""
    try:
        record = open_split(sample.uri, cache_dir, storage_options)[sample.index]
    except ImportError:
        raise
    except Exception as e:  # noqa: BLE001  LitData and its clients raise many types: one, naming the sample
        raise StorageError(
            f"{sample.uri} sample {sample.index} ({sample.key}): could not be read from storage ({type(e).__name__}: {e})"
        ) from e
    if record["key"] != sample.key:
        raise StorageError(
            f"{sample.uri} sample {sample.index} holds {record['key']!r}, the manifest says {sample.key!r}: "
            "shards and manifest.json were written by different runs of make_shards"
        )
    data = bytes(record["video"])  # a local dataset gives a memoryview of its mmap, which torchcodec refuses
    if hashlib.sha256(data).hexdigest() != sample.sha256:
        raise VideoReadError(f"{sample.key}: sha256 mismatch in {sample.uri} sample {sample.index} (corrupt chunk?)")
    return VideoBytes(sample.key, data)


@dataclass(frozen=True)
class StreamFrames:
    """A frame loader over shards: fetches the file's bytes, then hands them to the frame loader the files use
    (``load``), so the same decoder reads the same bytes."""

    load: Any  # clips.FrameLoader
    cache_dir: str | None = None
    storage_options: dict | None = None

    def __call__(self, source: Any, clip_idx: int, num_clips: int, rng):
        if isinstance(source, ShardSample):
            source = fetch(source, self.cache_dir, self.storage_options)
        return self.load(source, clip_idx, num_clips, rng)


def stream_items(manifest: Manifest, split: str, num_classes: int) -> list[tuple[ShardSample, int]]:
    """``(ShardSample, label)`` of a split, in the order of the files' items; labels checked against the classes."""
    if split not in manifest.splits:
        raise ValueError(f"{join(manifest.uri, MANIFEST)} has no {split!r} split (it has {sorted(manifest.splits)})")
    uri = manifest.split_uri(split)
    items = []
    for i, (key, label, sha, _) in enumerate(manifest.samples(split)):
        if not 0 <= int(label) < num_classes:
            raise ValueError(
                f"{join(manifest.uri, MANIFEST)}: {split} sample {key!r} has label {label}, not in [0, {num_classes})"
            )
        items.append((ShardSample(uri, i, key, sha), int(label)))
    return items


def compose_datamodule(name: str, root: str, overrides: list[str] = ()):
    """The datamodule of ``conf/data/NAME.yaml`` over ``root``, as ``train.py data=NAME data.root=ROOT`` makes it
    (``overrides``: ``KEY=VALUE`` for its other options); for the scripts that shard and benchmark a dataset."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[2] / "conf"
    over = [f"data={name}", f"data.root={Path(root).resolve()}", *(f"data.{o}" for o in overrides)]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return instantiate(compose("train", overrides=over).data)


# Writing -------------------------------------------------------------------------------------------------------


def file_key(source: str | Path, root: Path) -> str:
    """A file's name in the shards: its path relative to the dataset's root, else the path as given."""
    path = Path(source)
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(source)


def reencode_short_side(path: str, short_side: int, crf: int = 23) -> bytes:
    """The video of ``path`` as H.264 mp4 with its short side at most ``short_side`` (upright, aspect kept, even
    sizes), every frame at its original timestamp; no audio. A file already small enough is returned as it is."""
    import io

    import av

    from .decoding import frame_rotation, write_upright

    with av.open(path) as src:  # the first frame says whether there is anything to do
        stream = src.streams.video[0]
        first = next(src.decode(stream))
        upright = round(frame_rotation(first, stream) / 90) % 4 == 0
    if upright and min(first.width, first.height) <= short_side:  # a turn swaps the sides, not the shorter one
        return Path(path).read_bytes()
    out = io.BytesIO()
    write_upright(path, out, short_side, upscale=False, options={"crf": str(crf), "preset": "veryfast"}, container="mp4")
    return out.getvalue()


@dataclass(frozen=True)
class SampleWriter:
    """LitData's ``fn``: one item ``(key, path, label)`` -> the stored sample. Also appends the key's sha256 and
    size to ``log_dir/<pid>.jsonl``: the manifest is made from these logs, which survive an interruption."""

    log_dir: str
    short_side: int | None = None
    storage_options: dict | None = None

    def __call__(self, item: tuple[str, str, int]) -> dict[str, Any]:
        allow_http_endpoint(self.storage_options)  # this worker's uploads
        key, path, label = item
        data = None
        if self.short_side:
            try:
                data = reencode_short_side(path, self.short_side)
            except Exception as e:  # noqa: BLE001  an exception in a LitData worker hangs optimize (0.2.76)
                log.warning("%s: not re-encoded (%s: %s); stored as it is", path, type(e).__name__, e)
        data = Path(path).read_bytes() if data is None else data
        sha = hashlib.sha256(data).hexdigest()
        with open(Path(self.log_dir) / f"{os.getpid()}.jsonl", "a") as sha_log:
            sha_log.write(json.dumps([key, label, sha, len(data)]) + "\n")
        return {"key": key, "label": int(label), "sha256": sha, "video": data}


def _logged(log_dir: Path) -> dict[str, list]:
    records = {}
    for path in sorted(log_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[record[0]] = record
    return records


def write_split(
    items: list[tuple[str, str, int]],
    uri: str,
    work_dir: Path,
    short_side: int | None = None,
    workers: int = 1,
    chunk_bytes: str = "64MB",
    storage_options: dict | None = None,
) -> list[list]:
    """Write one split's items ``(key, path, label)`` as a LitData dataset at ``uri``, resumable: an interrupted run
    goes on where LitData's checkpoint (``URI/.checkpoints``) says (the same ``workers`` needed), and the sha256
    logs in ``work_dir`` keep what was written; without a checkpoint the split starts over, its old logs deleted.
    Returns ``[key, label, sha256, bytes]`` per item, in item order (which is the shards' order)."""
    import litdata

    work_dir.mkdir(parents=True, exist_ok=True)
    allow_http_endpoint(storage_options)
    inputs = [[key, path, int(label)] for key, path, label in items]  # lists: LitData compares them with its JSON
    if not exists(join(uri, "index.json"), storage_options):  # else this split was finished by an earlier run
        if not exists(join(uri, ".checkpoints", "config.json"), storage_options):  # a fresh split: LitData starts over
            for stale in work_dir.glob("*.jsonl"):  # sha256 logs of an earlier, other write: not to win over this one's
                stale.unlink()
        litdata.optimize(
            fn=SampleWriter(str(work_dir), short_side, storage_options),
            inputs=inputs,
            output_dir=uri,
            chunk_bytes=chunk_bytes,
            num_workers=max(1, min(workers, len(items))),
            reorder_files=False,
            keep_data_ordered=True,  # each worker a slice in order: sample i is item i
            use_checkpoint=True,
            start_method="fork",
            storage_options=storage_options or {},
            verbose=True,  # LitData's progress bar
        )
    logged = _logged(work_dir)
    missing = [key for key, _, _ in items if key not in logged]
    if missing:
        raise RuntimeError(f"{uri}: written, but {len(missing)} samples have no sha256 in {work_dir} (first: {missing[0]})")
    return [logged[key] for key, _, _ in items]


def manifest_entry(samples: list[list], class_names: list[str]) -> dict[str, Any]:
    per_class = {name: 0 for name in class_names}
    for _, label, _, _ in samples:
        per_class[class_names[label]] += 1
    return {"count": len(samples), "bytes": sum(s[3] for s in samples), "per_class": per_class, "samples": samples}


def write_manifest(uri: str, body: dict[str, Any], storage_options: dict | None = None) -> None:
    write_bytes(join(uri, MANIFEST), json.dumps({"format": FORMAT, **body}).encode(), storage_options)
