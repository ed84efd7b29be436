"""Something-Something-v2 (spec §6.2): the official label and split JSON files, segment-based frame sampling, from
per-video frame folders (AVA-style frame lists) or from the original ``.webm`` files decoded directly.

Layout under ``root``::

    something-something-v2-labels.json       {"Approaching something with your camera": "0", ...}
    something-something-v2-train.json        [{"id": "78687", "template": "Holding [something] next to ...", ...}]
    something-something-v2-validation.json
    20bn-something-something-v2/ID.webm      source: video
    frame_lists/{train,val}.csv + frames/    source: frames ("original_vido_id video_id frame_id path labels")

``source=stream uri=...``: the webm files from shards (``scripts/make_shards.py`` over ``source=video``).

Templates lose their brackets before the label lookup. There is no public test-set labelling, so testing runs on
the validation split (1 clip x 3 crops). Frames are RGB: SlowFast reads BGR with OpenCV and reverses the channels
(REVERSE_INPUT_CHANNEL), which is the same input to the model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .annotations import DatasetFormatError, read_frame_lists, read_ssv2_labels, read_ssv2_split
from .clips import ClipDataModule
from .decoding import VideoBytes, av_input, read_frames

LABELS_FILE = "something-something-v2-labels.json"
SPLIT_FILES = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json"}
FLIP_MESSAGE = (
    "horizontal flip is off for Something-Something-v2: labels such as 'Moving something from left to right' "
    "change meaning under a flip. Set data.allow_flip=true as well if you really want it."
)


def segment_indices(num_source: int, num_frames: int, train: bool, rng: torch.Generator | None = None) -> list[int]:
    """SlowFast's ``get_seq_frames``: ``num_frames`` equal segments; a random frame of each in training, the
    middle one otherwise (SAMPLING_RATE is ignored)."""
    seg = (num_source - 1) / num_frames
    out = []
    for i in range(num_frames):
        start, end = int(np.round(seg * i)), int(np.round(seg * (i + 1)))
        out.append(int(torch.randint(start, end + 1, (), generator=rng)) if train else (start + end) // 2)
    return out


@dataclass(frozen=True)
class SegmentFrames:
    """Frame loader: one frame of each of ``num_frames`` segments of the whole video (``segment_indices``), from
    a list of frame paths or a video file."""

    num_frames: int
    train: bool

    def __call__(self, source: Any, clip_idx: int, num_clips: int, rng: torch.Generator | None) -> torch.Tensor:
        if isinstance(source, (list, tuple)):
            idx = segment_indices(len(source), self.num_frames, self.train, rng)
            return read_frames([source[i] for i in idx])  # (T, C, H, W) RGB
        frames = _decode_all(source)
        idx = segment_indices(len(frames), self.num_frames, self.train, rng)
        return torch.stack([torch.from_numpy(frames[i].to_ndarray(format="rgb24")).permute(2, 0, 1) for i in idx])


def _decode_all(path: str | VideoBytes) -> list:
    """Every frame of a (short) video (a file or its bytes) as PyAV frames; only the sampled ones are converted to RGB."""
    import av

    with av.open(av_input(path)) as container:
        frames = list(container.decode(video=0))
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return frames


class SSv2DataModule(ClipDataModule):
    """SSv2 in its official layout; the other arguments are ``ClipDataModule``'s (SSv2 defaults from spec §2.2:
    short-side jitter [256, 320] drawn inverse-uniformly, no flip, 1 clip x 3 crops at test). ``sampling_rate`` is
    recorded in checkpoints only: segment sampling spreads the frames over the whole video."""

    def __init__(
        self,
        root: str,
        num_classes: int = 174,
        source: str = "frames",
        video_dir: str = "20bn-something-something-v2",
        frame_list_dir: str = "frame_lists",
        frame_dir: str = "frames",
        flip: bool = False,
        allow_flip: bool = False,
        random_resized_crop: bool = False,
        inverse_uniform_jitter: bool = True,
        test_num_clips: int = 1,
        test_num_crops: int = 3,
        **clip_options: Any,
    ) -> None:
        if flip and not allow_flip:
            raise ValueError(FLIP_MESSAGE)
        if source not in ("frames", "video", "stream"):
            raise ValueError(f"source must be 'frames', 'video' or 'stream', got {source!r}")
        super().__init__(
            root,
            num_classes,
            flip=flip,
            random_resized_crop=random_resized_crop,
            test_num_clips=test_num_clips,
            test_num_crops=test_num_crops,
            inverse_uniform_jitter=inverse_uniform_jitter,
            source=source,
            **clip_options,
        )
        self.source, self.video_dir, self.frame_list_dir, self.frame_dir = source, video_dir, frame_list_dir, frame_dir

    def write_synthetic(self, spec: dict[str, Any]) -> None:
        from .synthetic_ssv2 import SyntheticSSv2Spec, make_synthetic_ssv2

        make_synthetic_ssv2(self.root, SyntheticSSv2Spec(**spec))

    def required_files(self, train: bool, test: bool) -> list[Path]:
        splits = ["train", "val"] if train else ["val"]
        needed = [self.root / LABELS_FILE] + [self.root / SPLIT_FILES[s] for s in reversed(splits)]
        if self.source == "frames":
            needed += [self.root / self.frame_list_dir / f"{s}.csv" for s in splits]
        return needed

    def missing_file_message(self, path: Path) -> str:
        return (
            f"SSv2 file not found: {path}\n  expected the official layout under data.root (see "
            f"mvit_video/data/ssv2.py): {LABELS_FILE}, {SPLIT_FILES['train']}, {SPLIT_FILES['val']}, and "
            f"{self.video_dir}/ID.webm (data.source=video) or {self.frame_list_dir}/{{train,val}}.csv"
        )

    @functools.cached_property
    def class_names(self) -> dict[int, str]:
        """From the labels file (its count checked against ``num_classes``), read once; streaming: the manifest's."""
        if self.streaming:
            return self.stream_class_names()
        ids = read_ssv2_labels(self.root / LABELS_FILE, self.num_classes)
        return {i: name for name, i in sorted(ids.items(), key=lambda item: item[1])}

    def read_items(self, split: str) -> list[tuple[Any, int]]:
        split = "train" if split == "train" else "val"  # the test split is the validation set
        path = self.root / SPLIT_FILES[split]
        videos = read_ssv2_split(path, {name: i for i, name in self.class_names.items()})
        if self.source == "video":
            items = [(str(self.root / self.video_dir / f"{vid}.webm"), label) for vid, label in videos]
        else:  # videos missing from the frame list are dropped, as SlowFast does
            lists = read_frame_lists(self.root / self.frame_list_dir / f"{split}.csv")
            frame_dir = self.root / self.frame_dir
            items = [([str(frame_dir / rel) for rel in lists[vid]], label) for vid, label in videos if vid in lists]
        if not items:
            raise DatasetFormatError(f"{path}: no videos (with frames) listed")
        return items

    def frame_loader(self, mode: str) -> SegmentFrames:
        return SegmentFrames(self.num_frames, train=mode == "train")
