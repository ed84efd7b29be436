"""A zoo of small real-world video files written by the ``ffmpeg`` CLI (not by our own PyAV writer): the codecs,
containers and quirks that real datasets hold (phone rotation, variable frame rate, trimmed downloads, broken
files). ``write_zoo(dir)`` writes them all; the tests check that every decoder gives the same frames on the valid
ones and a named error on the bad ones.

Sizes are tiny and the content moves (``testsrc2``), so that frames differ and a wrong pick shows. Widths are
multiples of 16 where decord is to read the file: decord 0.6 misreads some other widths as 4 channels (tested on its
own). The whole zoo takes about 3-5 s on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SRC = "testsrc2=s={size}:r={fps}"  # moving colour bars, a counter and a clock


@dataclass(frozen=True)
class ZooFile:
    """One file of the zoo: how it was made and what a decoder should make of it."""

    name: str
    args: tuple[str, ...]  # ffmpeg arguments between the input and the output file
    size: str = "96x64"  # W x H as encoded
    fps: int = 30
    seconds: float = 2.0
    rotation: int = 0  # the display rotation written by a stream copy (the legacy ``rotate`` tag)
    audio_seconds: float = 0.0  # an AAC track this long (longer than the video: the container's duration is its)
    encoder: str = ""  # the ffmpeg encoder it needs; the file is left out where it is missing
    exact_rgb: bool = True  # 8-bit 4:2:0/4:2:2: every decoder's RGB is byte-identical (see test_video_zoo)


H264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast")  # B-frames, as cameras and uploads have
VALID = (
    ZooFile("h264.mp4", H264, encoder="libx264"),
    ZooFile("h264_faststart.mp4", (*H264, "-movflags", "+faststart"), encoder="libx264"),  # moov at the front
    ZooFile(
        "hevc.mp4",
        ("-c:v", "libx265", "-pix_fmt", "yuv420p", "-preset", "ultrafast", "-x265-params", "log-level=none", "-tag:v", "hvc1"),
        encoder="libx265",
    ),
    ZooFile("vp9.webm", ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"), encoder="libvpx-vp9"),
    ZooFile("av1.mkv", ("-c:v", "libsvtav1", "-preset", "12", "-pix_fmt", "yuv420p"), encoder="libsvtav1"),
    ZooFile("mpeg4.avi", ("-c:v", "mpeg4", "-q:v", "3", "-bf", "2"), encoder="mpeg4"),  # DivX-style, B-frames
    ZooFile("mjpeg.avi", ("-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-q:v", "3"), encoder="mjpeg"),
    ZooFile(
        "h264_10bit.mp4",
        ("-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-preset", "ultrafast"),
        encoder="libx264",
        exact_rgb=False,
    ),
    ZooFile("rotate90.mp4", H264, rotation=90, encoder="libx264"),  # a phone held upright
    ZooFile("rotate270.mp4", H264, rotation=270, encoder="libx264"),
    ZooFile("rotate180.mp4", H264, rotation=180, encoder="libx264"),
    # Variable frame rate: every 3rd frame, then all of frames 30-60, with their original timestamps.
    ZooFile(
        "vfr.mp4",
        ("-vf", r"select='not(mod(n\,3))+between(n\,30\,60)',setpts=PTS", "-fps_mode", "vfr", *H264),
        seconds=3.0,
        encoder="libx264",
    ),
    ZooFile("start_offset.mp4", (*H264, "-output_ts_offset", "5"), encoder="libx264"),  # first frame at 5 s
    # One keyframe over 22 s: seeking anywhere means decoding from the start.
    ZooFile(
        "long_gop.mp4",
        (
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "ultrafast",
            "-g",
            "100000",
            "-keyint_min",
            "100000",
            "-sc_threshold",
            "0",
        ),
        size="64x48",
        fps=5,
        seconds=22.0,
        encoder="libx264",
    ),
    ZooFile("h264_long_audio.mkv", H264, audio_seconds=2.5, encoder="libx264"),  # Matroska: no stream duration
    ZooFile("café clip 1.mp4", H264, encoder="libx264"),  # spaces and non-ASCII in the name
    ZooFile("narrow_72x48.mp4", H264, size="72x48", encoder="libx264"),  # decord 0.6 reads it as 4 channels
)
BAD = ("audio_only.m4a", "truncated.mp4", "zero_bytes.mp4", "not_a_video.mp4")


def has_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


def require_decoder(decoder: str) -> str:
    """``decoder`` resolved, or skip the calling test with check_decoder's reason (what to install) when it is an
    optional backend (torchcodec, decord) that is not installed here."""
    import pytest

    from mvit_video.data.decoding import check_decoder

    try:
        return check_decoder(decoder)
    except ImportError as e:
        pytest.skip(str(e))


def ffmpeg_frames(path: Path) -> torch.Tensor:
    """Every frame as the ffmpeg CLI shows it (display rotation applied, no frame dropped or duplicated):
    ``(N, C, H, W)`` uint8 RGB, an independent reference for our decoders."""
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height:stream_side_data",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    w, h = stream["width"], stream["height"]
    rotation = next((int(d.get("rotation", 0)) for d in stream.get("side_data_list", [])), 0)
    if rotation % 180:
        w, h = h, w
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostdin",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)  # (N, H, W, 3)
    return torch.from_numpy(frames.copy()).permute(0, 3, 1, 2)  # (N, C, H, W)


def encoders() -> set[str]:
    """The names of the encoders this ffmpeg has (``ffmpeg -encoders``)."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith(" ") and len(line.split()) > 1}


def ffmpeg(*args: str) -> None:
    """The ffmpeg CLI, quiet, overwriting, failing loudly."""
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, capture_output=True)


def write_zoo(root: Path) -> dict[str, Path]:
    """Write every zoo file the installed ffmpeg can make into ``root``: ``{name: path}`` (valid and bad)."""
    root.mkdir(parents=True, exist_ok=True)
    have = encoders()
    out: dict[str, Path] = {}
    for f in VALID:
        if f.encoder and f.encoder not in have:
            continue
        path = root / f.name
        src = ("-f", "lavfi", "-t", str(f.seconds), "-i", SRC.format(size=f.size, fps=f.fps))
        if f.audio_seconds:
            src += ("-f", "lavfi", "-t", str(f.audio_seconds), "-i", "sine=frequency=440", "-c:a", "aac")
        if f.rotation:  # encoding with a rotate tag writes no display matrix on ffmpeg 5.1: stream-copy it in
            plain = root / f"plain_{f.name}"
            ffmpeg(*src, *f.args, str(plain))
            ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={f.rotation}", str(path))
            plain.unlink()
        else:
            ffmpeg(*src, *f.args, str(path))
        out[f.name] = path
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:a", "aac", str(root / "audio_only.m4a"))
    whole = (root / "h264.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])  # moov at the end: lost
    (root / "zero_bytes.mp4").write_bytes(b"")
    (root / "not_a_video.mp4").write_bytes(b"\x00garbage" * 100)
    out.update({name: root / name for name in BAD})
    return out
