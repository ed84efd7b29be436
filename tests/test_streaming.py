"""Shards in object storage (issue 20): a file's bytes decode to the same clips as the file, with every decoder;
``scripts/make_shards.py`` writes LitData shards to a real S3 API (moto's server on 127.0.0.1, a bucket made by the
test) and resumes after a kill; ``data.source=stream`` gives the files' samples index for index, 2 ranks x 2
workers read every sample once per epoch, and a SIGUSR2 mid-epoch resume ends on the uninterrupted run's weights."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mvit_video.data import streaming
from mvit_video.data.decoding import VideoBytes, decode_clip
from mvit_video.data.kinetics import KineticsDataModule

from .helpers import assert_same_final_state, compose_cfg, run_script
from .video_zoo import require_decoder

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "mvit-shards"  # S3 bucket names: 3-63 characters
CLIP_KW = dict(num_classes=4, num_frames=8, sampling_rate=4, crop_size=32, train_jitter_scales=(32, 40), test_short_side=32)
# Files of the zoo (written by the ffmpeg CLI) whose timing or layout a decoder could get wrong from a byte stream:
# B-frames, variable frame rate, a display rotation, a first frame at 5 s, VP9 in WebM, an AVI with packed B-frames.
ZOO_FILES = ("h264.mp4", "vfr.mp4", "rotate90.mp4", "start_offset.mp4", "vp9.webm", "mpeg4.avi")


# Decoding from bytes (unmarked) ---------------------------------------------------------------------------------


def _assert_bytes_decode_like_files(files: list[Path], decoder: str, clips: int) -> None:
    for path in files:
        held = VideoBytes(path.name, path.read_bytes())
        for clip in range(clips):
            want = decode_clip(path, 8, 0.5, clip, clips, None, decoder)  # (T, C, H, W)
            assert torch.equal(decode_clip(held, 8, 0.5, clip, clips, None, decoder), want), (path.name, clip)
        rng, rng_held = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        want = decode_clip(path, 8, 0.5, rng=rng, decoder=decoder)
        assert torch.equal(decode_clip(held, 8, 0.5, rng=rng_held, decoder=decoder), want), path.name


@pytest.mark.parametrize("decoder", ["pyav", "torchcodec"])
def test_video_bytes_decode_to_the_files_clips(decoder, video_zoo):
    """A shard's sample is the file's bytes: the decoders we train with give the same frames from them as from the
    file, for test views and a random window (the same seed), bit for bit; here on B-frames and a rotated video."""
    _assert_bytes_decode_like_files([video_zoo["h264.mp4"], video_zoo["rotate90.mp4"]], require_decoder(decoder), clips=2)


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["pyav", "torchcodec", "decord", "pytorchvideo"])
def test_video_bytes_decode_to_the_files_clips_every_decoder(decoder, tiny_kinetics, video_zoo):
    """The same for every decoder, on the tiny set's H.264 and the zoo's VFR, start-offset, VP9 and AVI files."""
    files = [next((tiny_kinetics / "videos" / "train").rglob("*.mp4"))] + [video_zoo[n] for n in ZOO_FILES if n in video_zoo]
    assert len(files) >= 4, sorted(video_zoo)
    _assert_bytes_decode_like_files(files, require_decoder(decoder), clips=3)


def test_ssv2_segments_from_bytes_equal_the_files(video_zoo):
    """SSv2's whole-video segment sampling reads a webm from bytes as from the file."""
    from mvit_video.data.ssv2 import SegmentFrames

    path = video_zoo["vp9.webm"]
    load = SegmentFrames(8, train=True)
    want = load(str(path), 0, 1, torch.Generator().manual_seed(3))
    assert torch.equal(load(VideoBytes(path.name, path.read_bytes()), 0, 1, torch.Generator().manual_seed(3)), want)


def test_stream_without_shards_names_the_manifest_and_the_fix(tmp_path):
    dm = KineticsDataModule(str(tmp_path), source="stream", uri=str(tmp_path / "none"), **CLIP_KW)
    with pytest.raises(FileNotFoundError, match="make_shards.py") as err:
        dm.check_files()
    assert str(tmp_path / "none" / "manifest.json") in str(err.value)
    with pytest.raises(ValueError, match="data.uri"):
        KineticsDataModule(str(tmp_path), source="stream", **CLIP_KW)
    with pytest.raises(ValueError, match="'files' or 'stream'"):
        KineticsDataModule(str(tmp_path), source="s3", **CLIP_KW)


def test_allow_http_endpoint_reaches_litdatas_obstore_options(monkeypatch):
    """obstore refuses http:// unless its client options say so, and LitData passes options of its own: we add
    allow_http to them for an http endpoint only (without it, moto's server gets no request: 'BadScheme')."""
    from litdata.streaming import downloader

    monkeypatch.setattr(downloader, "_OBSTORE_CLIENT_OPTIONS", {"timeout": "200s"})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.com")
    streaming.allow_http_endpoint()
    assert "allow_http" not in downloader._OBSTORE_CLIENT_OPTIONS
    streaming.allow_http_endpoint({"endpoint_url": "http://127.0.0.1:9000"})
    assert downloader._OBSTORE_CLIENT_OPTIONS == {"timeout": "200s", "allow_http": True}


# A real S3 API (slow: LitData's writer starts worker processes) ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 (a free port), dummy credentials in the environment, one empty bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": url,
        }.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield url
    server.stop()


@pytest.fixture(scope="module")
def shards(s3, tiny_kinetics, tmp_path_factory):
    """The tiny Kinetics set as shards in the bucket, written by make_shards with 2 workers."""
    uri = f"s3://{BUCKET}/tiny"
    work = tmp_path_factory.mktemp("shard_logs")
    done = run_script("make_shards.py", tiny_kinetics, "--out", uri, "--set", "num_classes=4", "--workers", 2, "--work-dir", work)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train: 16 videos" in done.stdout and f"{uri}/manifest.json" in done.stdout
    return uri


@pytest.mark.slow
def test_make_shards_stores_the_files_bytes_with_a_manifest(shards, tiny_kinetics):
    import boto3

    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {"tiny/manifest.json", "tiny/train/index.json", "tiny/val/index.json", "tiny/test/index.json"} <= keys
    manifest = streaming.read_manifest(shards)
    assert manifest.class_names == ["moving_left", "moving_right", "moving_up", "moving_down"]
    assert {s: e["count"] for s, e in manifest.splits.items()} == {"train": 16, "val": 8, "test": 8}
    assert manifest.splits["train"]["per_class"] == dict.fromkeys(manifest.class_names, 4)
    files = KineticsDataModule(str(tiny_kinetics), **CLIP_KW)
    for split in ("train", "val", "test"):
        samples = manifest.samples(split)
        assert [(str(tiny_kinetics / key), label) for key, label, _, _ in samples] == files.items(split)  # same order
        for key, _, sha, size in samples[:3]:
            data = (tiny_kinetics / key).read_bytes()  # no re-encoding: the file's bytes, its checksum
            assert size == len(data) and sha == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["pyav", "torchcodec"])
def test_streamed_datasets_equal_the_files(decoder, shards, tiny_kinetics, tmp_path):
    """Every split, every sample (test: every view), the same (index, seed): ``torch.equal`` to the files'."""
    decoder = require_decoder(decoder)
    files = KineticsDataModule(str(tiny_kinetics), decoder=decoder, test_num_clips=2, test_num_crops=3, **CLIP_KW)
    stream = KineticsDataModule(
        str(tmp_path / "absent"), decoder=decoder, source="stream", uri=shards, cache_dir=str(tmp_path / "cache"),
        test_num_clips=2, test_num_crops=3, **CLIP_KW,
    )  # fmt: skip
    for dm in (files, stream):
        dm.check_files()
        dm.setup("fit")
        dm.setup("test")
    assert stream.class_names == files.class_names
    for split in ("train", "val", "test"):
        a, b = files.datasets[split], stream.datasets[split]
        assert len(a) == len(b)
        for i in range(len(a)):
            x, y = a[(i, 1000 + i)], b[(i, 1000 + i)]
            assert torch.equal(x["video"], y["video"]) and x["label"] == y["label"], (split, i)
            assert y["unreadable"] == [] and y["valid"]
    assert any((tmp_path / "cache").rglob("index.json")), "read through the S3 API (LitData caches the index)"


def test_storage_errors_stop_the_run_a_corrupt_video_does_not():
    """``ClipDataset.get`` re-raises ``StorageError`` (the shards cannot be read: it is no one video's fault, and
    skipping would shrink the test set or change the training order); a ``VideoReadError`` is an unreadable video."""
    from mvit_video.data.clips import ClipDataset
    from mvit_video.data.decoding import VideoReadError

    def loader(error: Exception):
        def load(source, clip_idx, num_clips, rng):
            raise error

        return load

    for mode in ("train", "val"):
        ds = ClipDataset([("a.mp4", 0), ("b.mp4", 1)], loader(streaming.StorageError("timeout")), None, 8, mode=mode)
        with pytest.raises(streaming.StorageError, match="timeout"):
            ds.get(0)
    ds = ClipDataset([("a.mp4", 0)], loader(VideoReadError("sha256 mismatch")), None, 8, mode="val")
    ds.blank_clip = lambda: torch.zeros(3, 8, 4, 4)  # noqa: E731  no transform needed for the blank
    sample = ds.get(0)
    assert not sample["valid"] and sample["unreadable"] == ["a.mp4"]


def _local_copy(uri: str, dest: Path) -> Path:
    """The shards under s3 ``uri`` as a local folder (the same manifest.json and chunks)."""
    import boto3

    client, prefix = boto3.client("s3"), uri.removeprefix(f"s3://{BUCKET}/")
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]:
        path = dest / obj["Key"].removeprefix(prefix).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, obj["Key"], str(path))
    return dest


@pytest.mark.slow
def test_a_corrupt_chunk_is_an_unreadable_video(shards, tiny_kinetics, tmp_path):
    """A byte flipped in a (local copy of a) chunk: the reader's sha256 check makes that sample unreadable (named,
    valid False), not a wrong clip; a missing chunk and shards of another run are ``StorageError``s."""
    out = _local_copy(shards, tmp_path / "copy")
    manifest = streaming.read_manifest(str(out))
    key, _, sha, _ = manifest.samples("val")[0]
    data = (tiny_kinetics / key).read_bytes()
    chunk = next(p for p in sorted((out / "val").glob("chunk-*.bin")) if data[:256] in p.read_bytes())
    raw = bytearray(chunk.read_bytes())
    raw[raw.index(data[:256]) + len(data) // 2] ^= 0xFF  # a byte in the middle of the video, not of the header
    chunk.write_bytes(bytes(raw))
    stream = KineticsDataModule(
        str(tmp_path / "absent"), decoder="pyav", source="stream", uri=str(out), cache_dir=str(tmp_path / "cache"), **CLIP_KW
    )
    stream.check_files()
    stream.setup("fit")
    sample = stream.datasets["val"][(0, 0)]
    assert not sample["valid"] and sample["unreadable"] == [key]
    assert stream.datasets["val"][(1, 0)]["valid"]  # the others read as before
    other = streaming.ShardSample(manifest.split_uri("val"), 1, key, sha)
    with pytest.raises(streaming.StorageError, match="different runs"):
        streaming.fetch(other, str(tmp_path / "cache"))
    for path in (out / "train").glob("chunk-*.bin"):
        path.unlink()  # every train chunk gone: no sample can be read, and no one video is to blame
    with pytest.raises(streaming.StorageError, match="could not be read from storage"):
        stream.datasets["train"][(0, 0)]


def _rank_epochs(rank: int, init_file: str, uri: str, cache: str, out: str) -> None:
    """One of 2 gloo ranks: 2 epochs of the streamed training loader (2 workers); the video ids it saw."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)  # the run's seed, the same on every rank (train.py: seed_everything): the sampler's order
    dm = KineticsDataModule(
        "/absent", source="stream", uri=uri, cache_dir=cache, batch_size=2, num_workers=2, decoder="pyav", **CLIP_KW
    )
    dm.check_files(test=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    seen = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        seen.append([(int(v), int(lab)) for batch in loader for v, lab in zip(batch["video_index"], batch["label"])])
    torch.save(seen, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_two_workers_read_every_sample_once_per_epoch(shards, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    args = (str(tmp_path / "init"), shards, str(tmp_path / "cache"), str(tmp_path / "seen"))
    mp.start_processes(_rank_epochs, args=args, nprocs=2, start_method="fork")  # forked: no second import of torch
    seen = [torch.load(f"{tmp_path / 'seen'}.{rank}") for rank in range(2)]
    labels = [
        label for _, label in KineticsDataModule(str(Path("/absent")), source="stream", uri=shards, **CLIP_KW).items("train")
    ]
    orders = []
    for epoch in range(2):
        both = seen[0][epoch] + seen[1][epoch]
        assert len(seen[0][epoch]) == len(seen[1][epoch]) == 8
        assert sorted(v for v, _ in both) == list(range(16)), epoch  # every sample once, on one rank
        assert all(label == labels[v] for v, label in both)
        orders.append([v for v, _ in seen[0][epoch]])
    assert orders[0] != orders[1]  # a new order each epoch


@pytest.mark.slow
def test_streamed_run_stopped_by_sigusr2_resumes_to_the_same_weights(shards, tmp_path):
    """Streamed from S3 with workers: SIGUSR2 after step 2 of 2 x 4 steps, resume from last.ckpt; the weights and
    AdamW state equal an uninterrupted streamed run's."""
    from mvit_video.train import run

    common = [
        "debug=tiny",
        "data.source=stream",
        f"data.uri={shards}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_classes=4",
        "data.num_workers=2",
        "data.decoder=pyav",
        "data.test_num_clips=1",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=1",
        "test=false",
        "model.drop_path_rate=0.1",
    ]

    def cfg(name: str, extra: list[str]):
        return compose_cfg(
            [f"data.root={tmp_path / 'absent'}", "data.synthetic=null", *common, *extra], tmp_path / name, tmp_path / "data"
        )

    run(cfg("plain", []))
    signal_at = ["+callbacks.signal._target_=tests.helpers.SignalAtStep", "+callbacks.signal.step=2"]
    with pytest.raises(SystemExit) as stop:
        run(cfg("pre", signal_at))
    assert stop.value.code == 128 + signal.SIGUSR2
    saved = torch.load(tmp_path / "pre" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3 and saved["KineticsDataModule"] == {"epoch": 0, "batches": 3}  # mid-epoch
    run(cfg("pre", ["ckpt_path=last"]))
    assert_same_final_state(tmp_path / "pre", tmp_path / "plain")


def _logged_lines(log_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in log_dir.glob("*.jsonl"))


@pytest.mark.slow
def test_make_shards_resumes_after_a_kill(tiny_kinetics, tmp_path):
    """make_shards killed (SIGKILL to its process group) while writing the train split, then run again: one
    sample per item, in order, each with its file's checksum; the manifest is written only by the finished run."""
    out, work = tmp_path / "shards", tmp_path / "work"
    args = [str(tiny_kinetics), "--out", str(out), "--set", "num_classes=4", "--work-dir", str(work), "--chunk-bytes", "30KB"]
    slow = (  # each sample takes 0.5 s, so the kill lands in the middle of the split
        "import sys, time, runpy; from mvit_video.data import streaming; call = streaming.SampleWriter.__call__; "
        "streaming.SampleWriter.__call__ = lambda self, item: (time.sleep(0.5), call(self, item))[1]; "
        f"sys.exit(runpy.run_path('scripts/make_shards.py')['main']({args!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", slow], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "train").glob("chunk-*.bin"))) < 3 and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list((out / "train").glob("chunk-*.bin")))
    assert 3 <= partial and not (out / "train" / "index.json").exists() and not (out / "manifest.json").exists()
    before = _logged_lines(work / "train")

    done = run_script("make_shards.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _logged_lines(work / "train") - before < 16, "resumed: the samples of the chunks written were not redone"
    manifest = json.loads((out / "manifest.json").read_text())
    files = KineticsDataModule(str(tiny_kinetics), **CLIP_KW)
    for split in ("train", "val", "test"):
        ds = streaming.open_split(str(out / split))
        samples = manifest["splits"][split]["samples"]
        assert len(ds) == len(samples) == len(files.items(split)), split
        for i, (key, label, sha, _) in enumerate(samples):
            assert (ds[i]["key"], ds[i]["label"], ds[i]["sha256"]) == (key, label, sha)
            held = streaming.fetch(streaming.ShardSample(str(out / split), i, key, sha))
            assert type(held.data) is bytes and held.data == (tiny_kinetics / key).read_bytes()  # not a memoryview


def test_short_side_copy_is_upright_smaller_and_keeps_every_frame_time(video_zoo):
    """``--short-side``: an H.264 copy at that short side, the display rotation applied to the pixels, every frame
    at its original time (the clip windows stay where they were); a file already that small is stored as it is."""
    from mvit_video.data.decoding import frame_timeline

    path = video_zoo["rotate90.mp4"]  # 96x64 stored, shown 64x96
    small = VideoBytes("small", streaming.reencode_short_side(str(path), 32))
    clip = decode_clip(small, 4, 1.0, decoder="pyav")  # (T, C, H, W)
    assert clip.shape[-2:] == (48, 32)  # upright: 64x96 shown -> 32x48
    assert frame_timeline(small).times == frame_timeline(str(path)).times
    vfr = video_zoo["vfr.mp4"]
    assert frame_timeline(VideoBytes("v", streaming.reencode_short_side(str(vfr), 32))).times == frame_timeline(str(vfr)).times
    assert streaming.reencode_short_side(str(vfr), 64) == vfr.read_bytes()  # 96x64: short side 64 already


@pytest.mark.slow
def test_bench_stream_prints_files_and_stream_rows(tiny_kinetics):
    done = run_script(
        "bench_stream.py", tiny_kinetics, "--local-s3", "--set", "num_classes=4", "crop_size=32",
        "train_jitter_scales=[32,40]", "num_frames=4", "--batches", 3, "--batch-size", 2,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| files") or line.startswith("| stream s3://")]
    assert len(rows) == 2 and all(float(r.split("|")[-2]) > 0 for r in rows), done.stdout
    assert "stream / files: " in done.stdout


def test_a_file_that_cannot_be_reencoded_is_stored_as_it_is(tmp_path, caplog):
    """An exception inside a LitData worker hangs ``optimize`` (0.2.76): a ``--short-side`` copy that fails keeps
    the file's bytes (the training loader reports it unreadable, as it would the file) and says so."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    sample = streaming.SampleWriter(str(tmp_path), short_side=32)(["bad.mp4", str(bad), 1])
    assert sample["video"] == bad.read_bytes() and sample["sha256"] == hashlib.sha256(bad.read_bytes()).hexdigest()
    assert "not re-encoded" in caplog.text and str(bad) in caplog.text
    assert json.loads((tmp_path / f"{os.getpid()}.jsonl").read_text()) == ["bad.mp4", 1, sample["sha256"], 800]


def test_make_shards_adds_splits_to_an_existing_manifest(tiny_kinetics, tmp_path):
    """``--splits val`` then ``--splits test`` into one --out: the manifest keeps val (it was rewritten with test
    only); a manifest of other classes is refused, naming it. A stale sha256 log in the work dir of a fresh split
    (no LitData checkpoint) is deleted, not taken for the file's."""
    out = tmp_path / "shards"
    args = [str(tiny_kinetics), "--out", str(out), "--set", "num_classes=4", "--work-dir", str(tmp_path / "work")]
    key = "videos/val/moving_left/moving_left_00000.mp4"
    (tmp_path / "work" / "val").mkdir(parents=True)
    (tmp_path / "work" / "val" / "zz.jsonl").write_text(json.dumps([key, 0, "0" * 64, 1]) + "\n")  # sorts last
    for split in ("val", "test"):
        done = run_script("make_shards.py", *args, "--splits", split)
        assert done.returncode == 0, done.stderr[-3000:]
    manifest = streaming.read_manifest(str(out))
    assert sorted(manifest.splits) == ["test", "val"] and manifest.splits["val"]["count"] == 8
    sha = {k: h for k, _, h, _ in manifest.samples("val")}[key]
    assert sha == hashlib.sha256((tiny_kinetics / key).read_bytes()).hexdigest()
    raw = json.loads((out / "manifest.json").read_text())
    raw["class_names"] = ["a", "b", "c", "d"]
    (out / "manifest.json").write_text(json.dumps(raw))
    refused = run_script("make_shards.py", *args, "--splits", "val")
    assert refused.returncode == 2 and f"{out / 'manifest.json'} was written for other classes" in refused.stderr
