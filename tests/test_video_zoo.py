"""Real-world files (written by the ffmpeg CLI, not by our own writer) through every decoder: the same frames as
a player shows, or an error that names the file.

How frames are compared:
- Reference: the ffmpeg CLI's own decode (display rotation applied, every frame once), independent of our code.
- Which frames a clip holds: each clip frame is found by exact equality among the same decoder's frames of the
  whole file (same library, same conversion: identical bytes), so a wrong pick shows as a wrong position whatever
  the decoders' colour conversions. Positions must agree with the PyAV decoder's to one frame.
- Pixels: 8-bit 4:2:0 / 4:2:2 to RGB24 takes swscale's table path, which ignores the scaler flags, so every decoder
  gives the same bytes (``exact_rgb``). 10-bit goes through the generic scaler, whose chroma upsampling filter
  differs (bilinear in PyAV and pytorchvideo, bicubic in torchcodec and the ffmpeg CLI, decord's own FFmpeg): pixels
  next to a chroma edge move by up to ~200 levels, the frame's mean |difference| stays <= 5 on these frames (bound
  8), and its signed mean <= 0.3 (bound 1: interpolation is unbiased, a wrong colour matrix or range shifts it by
  several levels). A sideways or upside-down frame differs by ~100 on average, or in shape.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

from mvit_video.data.decoding import DECODERS, decode_clip

from .video_zoo import BAD, VALID, ffmpeg_frames, require_decoder

BY_NAME = {f.name: f for f in VALID}
# A decoder that cannot read a kind of file at all: it must say so with VideoReadError naming the file.
CANNOT = {("decord", "av1.mkv"): "decord 0.6 bundles an FFmpeg without an AV1 decoder"}
WINDOWS = [("test", k) for k in range(3)] + [("train", seed) for seed in range(2)]  # clip k of 3; random windows
NUM_FRAMES, SPAN = 8, 1.0


def _path(video_zoo: dict[str, Path], name: str) -> str:
    if name not in video_zoo:
        pytest.skip(f"this ffmpeg has no {BY_NAME[name].encoder} encoder to write {name}")
    return str(video_zoo[name])


@functools.cache
def _reference(path: str) -> torch.Tensor:
    return ffmpeg_frames(Path(path))  # (N, C, H, W)


@functools.cache
def _all_frames(path: str, decoder: str) -> torch.Tensor:
    """Every frame of ``path`` once, in order, by ``decoder`` (a window longer than any video)."""
    return decode_clip(path, len(_reference(path)), 1e4, decoder=decoder)  # (N, C, H, W)


@functools.cache
def _clip(path: str, decoder: str, mode: str, k: int) -> torch.Tensor:
    if mode == "train":
        return decode_clip(path, NUM_FRAMES, SPAN, rng=torch.Generator().manual_seed(k), decoder=decoder)
    return decode_clip(path, NUM_FRAMES, SPAN, k, 3, decoder=decoder)


def _positions(clip: torch.Tensor, frames: torch.Tensor) -> list[int]:
    """Where each clip frame is among ``frames`` (exact equality: the same decoder decoded both)."""
    out = []
    for t, frame in enumerate(clip):
        found = [i for i, f in enumerate(frames) if torch.equal(f, frame)]
        assert found, f"clip frame {t} is none of the decoder's own frames of the file"
        out.append(found[0])
    return out


def assert_same_pictures(ours: torch.Tensor, ref: torch.Tensor, exact: bool) -> None:
    """``(N, C, H, W)`` uint8: identical bytes, or the same pictures up to chroma interpolation (module doc)."""
    assert ours.shape == ref.shape, f"shape {tuple(ours.shape)} != {tuple(ref.shape)} (rotation or frame count)"
    if exact:
        bad = [i for i in range(len(ref)) if not torch.equal(ours[i], ref[i])]
        assert not bad, f"frames {bad[:10]} differ, mean |diff| {(ours.float() - ref.float()).abs().mean():.2f}"
        return
    diff = ours.float() - ref.float()
    mean_abs, mean = diff.abs().mean((1, 2, 3)), diff.mean((1, 2, 3))  # (N,) per frame
    assert mean_abs.max() <= 8, f"mean |diff| up to {mean_abs.max():.2f} levels: other pictures"
    assert mean.abs().max() <= 1, f"signed mean diff up to {mean.abs().max():.2f} levels: colour matrix or range"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_decoder_shows_what_ffmpeg_shows(video_zoo, name, decoder):
    """The whole file, frame by frame, as the ffmpeg CLI shows it: upright, every frame once, same colours."""
    require_decoder(decoder)
    path = _path(video_zoo, name)
    if (decoder, name) in CANNOT:
        _assert_refused(path, decoder)
        pytest.xfail(CANNOT[decoder, name])
    if decoder == "decord" and name == "narrow_72x48.mp4":
        _assert_decord_misread(path)
        return
    assert_same_pictures(_all_frames(path, decoder), _reference(path), BY_NAME[name].exact_rgb)


@pytest.mark.parametrize("decoder", [d for d in DECODERS if d != "pyav"])
@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_decoder_picks_pyavs_frames(video_zoo, name, decoder):
    """Test-mode clips (k of 3) and train-mode random windows (same rng): the same frames as the PyAV decoder, to
    one frame (a frame on a window's edge may fall either side)."""
    require_decoder(decoder)
    path = _path(video_zoo, name)
    if (decoder, name) in CANNOT or (decoder == "decord" and name == "narrow_72x48.mp4"):
        pytest.skip("covered by test_every_decoder_shows_what_ffmpeg_shows (a named error)")
    for mode, k in WINDOWS:
        ours = _positions(_clip(path, decoder, mode, k), _all_frames(path, decoder))
        ref = _positions(_clip(path, "pyav", mode, k), _all_frames(path, "pyav"))
        assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1, f"{mode} window {k}: frames {ours}, PyAV {ref}"


def test_rotation_is_applied_in_the_right_direction(video_zoo):
    """90 and 270 differ only in direction: both decoded upright (portrait), and each other's 180-degree turn."""
    require_decoder("pyav")
    r90, r270 = (_all_frames(_path(video_zoo, n), "pyav") for n in ("rotate90.mp4", "rotate270.mp4"))
    plain = _all_frames(_path(video_zoo, "h264.mp4"), "pyav")
    assert r90.shape[-2:] == (96, 64) and plain.shape[-2:] == (64, 96)
    assert torch.equal(r90, plain.rot90(1, (-2, -1))) and torch.equal(r270, plain.rot90(-1, (-2, -1)))


@pytest.mark.parametrize("decoder", DECODERS)
def test_variable_frame_rate_clip_covers_its_seconds(video_zoo, decoder):
    """A VFR file (every 3rd frame of 30 fps, then all of frames 30-60): the first clip of 3 over 1 s holds frames
    shown in [0, 1) s, not the first 1 s worth of frames at the average rate (0-1.2 s)."""
    require_decoder(decoder)
    path = _path(video_zoo, "vfr.mp4")
    positions = _positions(_clip(path, decoder, "test", 0), _all_frames(path, decoder))
    # Frames 0..9 show at 0, 0.1, ..., 0.9 s; frame 10 (source frame 30) at 1.0 s is outside.
    assert positions == [0, 1, 2, 3, 5, 6, 7, 9], f"{decoder}: {positions}"


@pytest.mark.parametrize("decoder", DECODERS)
def test_bad_files_raise_a_named_error_from_every_decoder(video_zoo, decoder):
    """Audio only, truncated (moov lost), zero bytes, garbage, missing: ``VideoReadError`` naming the file, fast.
    A hang would stop here after 60 s with every thread's stack (faulthandler) instead of stalling the suite."""
    import faulthandler

    from mvit_video.data.decoding import VideoReadError

    require_decoder(decoder)
    paths = [str(video_zoo[name]) for name in BAD] + [str(Path(video_zoo[BAD[0]]).parent / "missing.mp4")]
    faulthandler.dump_traceback_later(60, exit=True)
    try:
        for path in paths:
            with pytest.raises(VideoReadError) as info:
                decode_clip(path, NUM_FRAMES, SPAN, decoder=decoder)
            assert path in str(info.value)
    finally:
        faulthandler.cancel_dump_traceback_later()


def _installed(decoder: str) -> bool:
    from mvit_video.data.decoding import check_decoder

    try:
        check_decoder(decoder)
    except ImportError:
        return False
    return True


def _assert_refused(path: str, decoder: str) -> None:
    from mvit_video.data.decoding import VideoReadError

    with pytest.raises(VideoReadError, match=path.replace(".", r"\.")):
        decode_clip(path, NUM_FRAMES, SPAN, decoder=decoder)


def _assert_decord_misread(path: str) -> None:
    from mvit_video.data.decoding import DecordMisreadError

    with pytest.raises(DecordMisreadError, match=path.replace(".", r"\.")):
        decode_clip(path, NUM_FRAMES, SPAN, decoder="decord")


def test_missing_optional_backend_skips_with_its_reason(monkeypatch):
    """torchcodec or decord not installed: tests of that backend skip and say what to install (they errored)."""
    for name in ("torchcodec", "decord"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
        monkeypatch.delitem(sys.modules, f"{name}.decoders", raising=False)
        with pytest.raises(pytest.skip.Exception, match=rf"decoder='{name}' needs {name}.*pip install"):
            require_decoder(name)


def test_a_kinetics_dataset_of_the_zoo_trains_and_counts_its_bad_files(tmp_path, video_zoo):
    """The zoo as a dataset in the official layout (class folders with spaces, relative paths), through the real
    entry point with the default decoder: training runs on every valid file, and validation and test score each
    valid file once and count each bad one once, named."""
    from mvit_video.train import run

    from .helpers import compose_cfg

    root = tmp_path / "zoo_kinetics"
    valid = sorted(n for n in video_zoo if n not in BAD)
    rows = {}
    for i, name in enumerate([*valid, *BAD]):
        cls = ("air drumming", "playing ice hockey")[i % 2]
        rel = Path("videos") / cls / name
        (root / rel.parent).mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(video_zoo[name])
        rows[name] = f"{rel} {i % 2}"
    (root / "train.csv").write_text("\n".join(rows[n] for n in valid) + "\n")
    for split in ("val", "test"):
        (root / f"{split}.csv").write_text("\n".join(rows.values()) + "\n")
    (root / "classnames.txt").write_text("air drumming\nplaying ice hockey\n")
    cfg = compose_cfg(
        [
            "debug=tiny",
            "data=kinetics",
            f"data.root={root}",
            "data.num_classes=2",
            "data.num_frames=4",
            "data.test_num_clips=1",
            "trainer.limit_train_batches=1.0",
            "trainer.limit_val_batches=1.0",
            "trainer.limit_test_batches=1.0",
        ],
        tmp_path / "out",
        tmp_path / "data",
    )
    metrics = run(cfg)
    assert metrics["train/skipped_videos"] == 0
    for split in ("val", "test"):
        assert (metrics[f"{split}/videos"], metrics[f"{split}/unreadable_videos"]) == (len(valid), len(BAD)), split
    meta = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert meta["mvit_video"]["class_names"] == ["air drumming", "playing ice hockey"]
