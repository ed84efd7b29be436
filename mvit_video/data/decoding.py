"""Video decoding: torchcodec where installed, else our selective PyAV decoder (``auto``, the datamodules' default);
decord or pytorchvideo's PyAV decoder on request. Every decoder gives the same frames (``tests/test_video_zoo.py``
checks it on files written by the ffmpeg CLI).

``decode_clip`` returns exactly ``num_frames`` frames ``(T, C, H, W)`` uint8, upright (the display rotation of phone
videos applied), sampled uniformly over the frames shown in a time window, so the clip covers the same seconds
whatever the file's frame rate, constant or variable (Kinetics protocol, spec §6.1). Time is measured from the
first frame, so a trimmed download whose first frame is at 5 s starts at 0.

Why our own PyAV path: pytorchvideo's ``EncodedVideoPyAV.get_clip`` converts every frame of the window to an RGB
tensor before a clip samples 8-16 of them; we keep the decoded frames in YUV and convert only the sampled ones,
about 3x faster on the synthetic set (measured: 58 ms vs 19 ms per clip). pytorchvideo's decoder stays available
as ``decoder=pytorchvideo`` and gives the same frames.

``torchcodec`` (FFmpeg's libraries from the system) and ``decord`` (its own FFmpeg) seek to and decode only the
frames sampled: they are picked on the frames' timestamps (torchcodec: read by demuxing with PyAV, no decoding;
decord: from its own index), not by index over the average frame rate, which is wrong for variable-rate files. Both
are optional: ``pip install 'mvit_video[decoders]'``, and for torchcodec FFmpeg 4-7 (Debian: ``apt install
libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6``).

Any failure to read a file raises ``VideoReadError`` naming it (``DecordMisreadError`` for decord 0.6's 4-channel
misreads of some frame widths).

A video held in memory (``VideoBytes``: a sample of a shard, ``data/streaming.py``) goes wherever a path does: every
decoder reads it from the same bytes the file holds, so it gives the same frames (``tests/test_streaming.py``).
"""

from __future__ import annotations

import bisect
import functools
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
DECODERS = ("pyav", "torchcodec", "decord", "pytorchvideo")
EPS = 1e-3  # seconds: frame times this close are equal (decord's are float32; frames are >= 4 ms apart)


@dataclass(frozen=True, repr=False)
class VideoBytes:
    """An encoded video in memory (a shard's sample): decoded exactly as the file it was copied from. ``name``
    (the file's key in the dataset) stands for it in messages and counts of unreadable videos."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"VideoBytes({self.name!r}, {len(self.data)} bytes)"

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def av_input(source: str | VideoBytes):
    """What av.open / pytorchvideo take: the path, or a file object over the bytes."""
    return source.open() if isinstance(source, VideoBytes) else source


class VideoReadError(RuntimeError):
    """A file that cannot be decoded as a video; the message names the file."""


class DecordMisreadError(VideoReadError):
    """decord 0.6 decodes some frame widths (e.g. 48, 72) as 4 channels and then fails to batch them."""


def check_decoder(decoder: str) -> str:
    """``decoder`` if it is known and importable here; otherwise a ValueError / ImportError that says what to do.
    ``auto``: torchcodec where it and FFmpeg's libraries load (the same frames, fastest), else our PyAV decoder."""
    if decoder == "auto":
        try:
            return check_decoder("torchcodec")
        except ImportError:
            return "pyav"
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {('auto', *DECODERS)}, got {decoder!r}")
    if decoder in ("torchcodec", "decord"):
        try:
            if decoder == "torchcodec":
                from torchcodec.decoders import VideoDecoder  # noqa: F401  loads FFmpeg's libraries
            else:
                import decord  # noqa: F401
        except (ImportError, RuntimeError, OSError) as e:
            hint = " and FFmpeg 4-7's shared libraries" if decoder == "torchcodec" else ""
            raise ImportError(f"decoder={decoder!r} needs {decoder}{hint}: pip install 'mvit_video[decoders]' ({e})") from e
    return decoder


def clip_start(duration: float, span: float, clip_idx: int, num_clips: int, rng: torch.Generator | None) -> float:
    """Start second of a clip of ``span`` seconds. ``rng`` given: uniform random (train/val). Otherwise clip
    ``clip_idx`` of ``num_clips`` with offset sampling (first at the start, last at the end; one: centred)."""
    delta = max(duration - span, 0.0)
    if rng is not None:
        return float(torch.rand((), generator=rng)) * delta
    if num_clips == 1:
        return delta / 2
    return clip_idx * delta / (num_clips - 1)


def decode_clip(
    path: str | Path | VideoBytes,
    num_frames: int,
    span: float,
    clip_idx: int = 0,
    num_clips: int = 1,
    rng: torch.Generator | None = None,
    decoder: str = "pyav",
) -> torch.Tensor:
    """Decode ``num_frames`` frames ``(T, C, H, W)`` uint8 over a ``span``-second window of ``path`` (a file, or its
    bytes); any failure is a ``VideoReadError`` naming the file."""
    decoder = check_decoder(decoder)
    if not isinstance(path, VideoBytes):
        path = str(path)
        if not Path(path).is_file():
            raise VideoReadError(f"no such video file: {path}")
    try:
        timeline = frame_timeline(path)
        if decoder in ("torchcodec", "decord") and timeline.packed_b_frames:
            log.debug("%s: an AVI with B-frames, decoded with PyAV for %s (see Timeline)", path, decoder)
            decoder = "pyav"
        if decoder == "decord":  # its own FFmpeg and index
            return _decode_decord(path, num_frames, span, clip_idx, num_clips, rng)
        start = clip_start(timeline.duration, span, clip_idx, num_clips, rng)
        decode = {"pyav": _decode_pyav, "torchcodec": _decode_torchcodec, "pytorchvideo": _decode_pytorchvideo}
        return decode[decoder](path, timeline, start, span, num_frames)
    except VideoReadError:
        raise
    except Exception as e:  # noqa: BLE001  each backend has its own errors (and decord's name no file)
        raise VideoReadError(f"cannot decode {path} with {decoder} ({type(e).__name__}: {e})") from e


def select_frames(times: list[float], start: float, span: float, num_frames: int) -> list[int]:
    """``num_frames`` indices, uniform over the frames shown from ``start`` to ``start + span`` (``times``: each
    frame's time in seconds from the first, ascending; repeats frames if few). A window in which no frame starts
    gets the frame on screen at its start."""
    first = bisect.bisect_left(times, start - EPS)
    stop = bisect.bisect_left(times, start + span - EPS)  # frames in [start, start + span), to within EPS
    if stop <= first:
        return [max(first - 1, 0)] * num_frames
    return torch.linspace(first, stop - 1, num_frames).long().tolist()


@dataclass(frozen=True)
class Timeline:
    """When each frame of a file is shown, read by demuxing with PyAV (no decoding)."""

    times: list[float]  # seconds from the first frame, ascending
    duration: float  # seconds from the first frame to the end of the last
    origin: float  # the first frame's time in the file, seconds (5.0 for a file trimmed at 5 s)
    stream_start: float  # the stream's declared start time, seconds (pytorchvideo's origin)
    # An AVI with B-frames (DivX / XviD, as in UCF101 and HMDB51): its packets carry decode times only, and the
    # presentation times each FFmpeg version reconstructs differ. torchcodec 0.17 and decord 0.6 pick frames one
    # off there (decord's seeks even land elsewhere), so the PyAV decoder reads these files for them.
    packed_b_frames: bool = False


def frame_timeline(path: str | VideoBytes) -> Timeline:
    """The timeline of the first video stream of ``path``: packet timestamps in presentation order. Kept for the
    last few files read (the test views of a video, ``predict``'s clips), keyed by size and modification time;
    a video in memory is demuxed each time (milliseconds, against the decoding that follows)."""
    if isinstance(path, VideoBytes):
        return _read_timeline(path)
    stat = Path(path).stat()
    return _timeline(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _timeline(path: str, size: int, mtime_ns: int) -> Timeline:
    return _read_timeline(path)


def _read_timeline(path: str | VideoBytes) -> Timeline:
    import av

    with av.open(av_input(path)) as container:
        if not container.streams.video:
            raise VideoReadError(f"no video stream in {path}")
        stream = container.streams.video[0]
        tb = stream.time_base
        stamps: list[int] = []  # pts in time-base units
        for packet in container.demux(stream):
            pts = packet.pts if packet.pts is not None else packet.dts  # AVI: dts only
            if pts is not None and not getattr(packet, "is_discard", False):
                stamps.append(pts)
        stream_start = float((stream.start_time or 0) * tb)
        packed = "avi" in container.format.name.split(",") and bool(stream.codec_context.has_b_frames)
        header = float(stream.duration * tb) if stream.duration else 0.0  # Matroska / WebM have none
    if not stamps:
        raise VideoReadError(f"no video frames in {path}")
    stamps.sort()
    first = stamps[0]
    times = [float((pts - first) * tb) for pts in stamps]
    # The stream header's duration (packet durations are in decode order, so the last shown frame's is unknown);
    # none, or one that ends before the last frame starts, gives way to the last frame's time plus the mean frame
    # length (the container's duration may be the audio's, longer).
    if header <= times[-1]:
        header = times[-1] + (times[-1] / (len(times) - 1) if len(times) > 1 else 1.0)
    return Timeline(times, header, float(first * tb), stream_start, packed)


def rotate(frames: torch.Tensor, degrees: float) -> torch.Tensor:
    """``(..., H, W)`` turned by the display rotation ``degrees`` (counter-clockwise, as FFmpeg's display matrix and
    PyAV's ``frame.rotation`` give it) to how players show the video."""
    k = round(degrees / 90) % 4
    return frames.rot90(k, dims=(-2, -1)) if k else frames


def frame_rotation(frame, stream) -> float:
    """The display rotation of a PyAV frame in degrees counter-clockwise: ``frame.rotation`` (the display matrix;
    PyAV 18 has it, checked against the ffmpeg CLI by the zoo tests), else the ``rotate`` tag that FFmpeg 5 and
    older demuxers export (clockwise degrees; a fallback for older PyAV, not exercised by the tests here)."""
    if hasattr(frame, "rotation"):
        return float(frame.rotation or 0)
    return -float(stream.metadata.get("rotate", 0) or 0)


def _decode_pyav(path: str | VideoBytes, timeline: Timeline, start: float, span: float, num_frames: int) -> torch.Tensor:
    import av

    with av.open(av_input(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base)
        origin = round(timeline.origin / tb)  # the first frame's pts
        if start > 0:
            container.seek(int(start / tb) + origin, stream=stream, backward=True, any_frame=False)
        frames, before = [], None  # decoded frames stay in their native format until sampled
        for frame in container.decode(stream):
            t = (frame.pts - origin) * tb if frame.pts is not None else None
            if t is not None and t < start - EPS:
                before = frame  # on screen at the window's start if no frame starts inside it
                continue
            if t is not None and t >= start + span - EPS:
                break
            frames.append(frame)
        frames = frames or [before] * (before is not None)
        if not frames:
            raise VideoReadError(f"no frames decoded in [{start:.2f}, {start + span:.2f}) s of {path}")
        idx = torch.linspace(0, len(frames) - 1, num_frames).long().tolist()  # uniform, repeats if short
        arrays = {i: frames[i].to_ndarray(format="rgb24") for i in set(idx)}
        degrees = frame_rotation(frames[0], stream)
    clip = torch.from_numpy(np.stack([arrays[i] for i in idx])).permute(0, 3, 1, 2)  # (T, C, H, W)
    return rotate(clip, degrees)


def _decode_torchcodec(path: str | VideoBytes, timeline: Timeline, start: float, span: float, num_frames: int) -> torch.Tensor:
    """Pick frames on the timeline, then ask torchcodec for the frame played just after each one's start (half-way
    to the next, at most EPS: robust to rounding, and inside the stream's end); it seeks and decodes only those,
    and applies the display rotation itself."""
    from torchcodec.decoders import VideoDecoder

    times = timeline.times
    idx = select_frames(times, start, span, num_frames)
    unique = sorted(set(idx))
    ends = [*times[1:], math.inf]
    played_at = [timeline.origin + times[i] + min((ends[i] - times[i]) / 2, EPS) for i in unique]
    source = path.data if isinstance(path, VideoBytes) else path
    video = VideoDecoder(source, dimension_order="NCHW", num_ffmpeg_threads=1)
    frames = video.get_frames_played_at(played_at).data  # (N, C, H, W) uint8
    return frames[[unique.index(i) for i in idx]]  # (T, C, H, W)


def _decode_decord(
    path: str | VideoBytes, num_frames: int, span: float, clip_idx: int, num_clips: int, rng: torch.Generator | None
) -> torch.Tensor:
    """Pick frames on decord's own timestamps (its index, no decoding); decord applies the display rotation."""
    import decord

    video = decord.VideoReader(av_input(path), num_threads=1)
    if not len(video):
        raise VideoReadError(f"no video frames in {path}")
    stamps = video.get_frame_timestamp(list(range(len(video))))  # (N, 2) start, end seconds
    if np.all(np.diff(stamps[:, 0]) > 0) and stamps[0, 0] >= 0:
        times, duration = (stamps[:, 0] - stamps[0, 0]).tolist(), float(stamps[-1, 1] - stamps[0, 0])
    else:  # AVI with packed B-frames: no timestamps in decord's index, but AVI is constant-rate
        fps = video.get_avg_fps()
        times, duration = [i / fps for i in range(len(video))], len(video) / fps
    start = clip_start(duration, span, clip_idx, num_clips, rng)
    idx = select_frames(times, start, span, num_frames)
    unique = sorted(set(idx))
    first = video[unique[0]].shape  # decord 0.6 returns 4-channel frames for some sizes, then fails to batch
    if first[-1] != 3:
        raise DecordMisreadError(f"decord decoded {tuple(first)} frames (not RGB) from {path}: use decoder='torchcodec'")
    frames = torch.from_numpy(video.get_batch(unique).asnumpy()).permute(0, 3, 1, 2)  # (N, C, H, W)
    return frames[[unique.index(i) for i in idx]]  # (T, C, H, W)


def _decode_pytorchvideo(path: str | VideoBytes, timeline: Timeline, start: float, span: float, num_frames: int) -> torch.Tensor:
    """pytorchvideo's PyAV decoder on our timeline: its own ``duration`` is wrong for files that do not start at 0
    (it subtracts the start time from the length), and it ignores the display rotation."""
    import av
    from pytorchvideo.data.encoded_video import EncodedVideo
    from pytorchvideo.data.encoded_video_pyav import EncodedVideoPyAV

    shift = timeline.origin - timeline.stream_start  # pytorchvideo's times start at the stream's start time
    if isinstance(path, VideoBytes):
        video = EncodedVideoPyAV(path.open(), path.name, decode_audio=False)
    else:
        video = EncodedVideo.from_path(path, decode_audio=False, decoder="pyav")
    try:
        frames = video.get_clip(shift + start - EPS, shift + start + span - EPS)["video"]  # (C, N, H, W) float
        if frames is None:  # no frame starts in the window: the one on screen at its start
            t = shift + timeline.times[select_frames(timeline.times, start, span, 1)[0]]
            frames = video.get_clip(t - EPS, t + EPS)["video"]
        if frames is None or frames.shape[1] == 0:
            raise VideoReadError(f"no frames decoded in [{start:.2f}, {start + span:.2f}) s of {path}")
    finally:
        video.close()
    with av.open(av_input(path)) as container:  # PyAV gives the rotation with the frames
        stream = container.streams.video[0]
        degrees = frame_rotation(next(container.decode(stream)), stream)
    idx = torch.linspace(0, frames.shape[1] - 1, num_frames).long()  # uniform, repeats frames if short
    return rotate(frames[:, idx].permute(1, 0, 2, 3).to(torch.uint8), degrees)  # (T, C, H, W)


def read_frames(paths: list) -> torch.Tensor:
    """Image files (JPEG frame folders of AVA and SSv2) as ``(T, C, H, W)`` uint8 RGB."""
    from PIL import Image

    def read(path) -> np.ndarray:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))  # (H, W, 3)

    return torch.from_numpy(np.stack([read(p) for p in paths])).permute(0, 3, 1, 2)


def write_upright(
    src: str | Path,
    dst: str | Path | io.BytesIO,
    short_side: int,
    upscale: bool = True,
    options: dict[str, str] | None = None,
    container: str | None = None,
) -> None:
    """Re-encode ``src`` to H.264 with its short side at ``short_side`` (at most, unless ``upscale``), even sizes,
    every frame at its decoded timestamp (VFR and start offsets kept), no audio. A phone video's display rotation is
    applied to the pixels (the output carries none, as the ffmpeg CLI writes it by default), so every decoder reads
    the output upright. ``dst``: a path, or a buffer with ``container`` naming its format. The one writer of
    ``scripts/prepare_kinetics.py`` and of the shards' short-side copies (``streaming.reencode_short_side``)."""
    import av

    with av.open(str(src)) as inp, av.open(dst if isinstance(dst, io.BytesIO) else str(dst), "w", format=container) as out:
        vin = inp.streams.video[0]
        vout = None
        for frame in inp.decode(vin):
            if vout is None:  # sized from the first frame, upright
                degrees = frame_rotation(frame, vin)
                w, h = (frame.height, frame.width) if round(degrees / 90) % 2 else (frame.width, frame.height)
                scale = short_side / min(w, h) if upscale else min(1.0, short_side / min(w, h))
                ow, oh = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
                vout = out.add_stream("libx264", rate=vin.average_rate or vin.guessed_rate or 30)
                vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
                vout.codec_context.time_base = vin.time_base  # frame pts as decoded: VFR and start times kept
                vout.options = dict(options or {})
            pts = frame.pts
            if degrees:
                rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)  # (C, H, W)
                frame = av.VideoFrame.from_ndarray(rotate(rgb, degrees).permute(1, 2, 0).contiguous().numpy(), "rgb24")
            frame = frame.reformat(width=ow, height=oh, format="yuv420p")
            frame.pts, frame.time_base = pts, vin.time_base
            for packet in vout.encode(frame):
                out.mux(packet)
        if vout is None:
            raise ValueError(f"{src}: no video frames")
        for packet in vout.encode():
            out.mux(packet)
