"""Something-Something-v2 (spec §6.2): the official label and split JSON files, segment-based frame sampling, from
per-video frame folders (AVA-style frame lists) or from the original ``.webm`` files decoded directly.

Layout under ``root``::

    something-something-v2-labels.json       {"Approaching something with your camera": "0", ...}
    something-something-v2-train.json        [{"id": "78687", "template": "Holding [something] next to ...", ...}]
    something-something-v2-validation.json
    20bn-something-something-v2/ID.webm      source: video
    frame_lists/{train,val}.csv + frames/    source: frames ("original_vido_id video_id frame_id path labels")

Templates lose their brackets before the label lookup. There is no public test-set labelling, so testing runs on
the validation split (1 clip x 3 crops). Frames are RGB: SlowFast reads BGR with OpenCV and reverses the channels
(REVERSE_INPUT_CHANNEL), which is the same input to the model.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import torch

from .ava import read_frame_lists
from .decoding import read_frames
from .kinetics import DatasetFormatError, KineticsDataModule, KineticsDataset

LABELS_FILE = "something-something-v2-labels.json"
SPLIT_FILES = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json"}
FLIP_MESSAGE = (
    "horizontal flip is off for Something-Something-v2: labels such as 'Moving something from left to right' "
    "change meaning under a flip. Set data.allow_flip=true as well if you really want it."
)


def template_to_label(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def segment_indices(num_source: int, num_frames: int, train: bool, rng: torch.Generator | None = None) -> list[int]:
    """SlowFast's ``get_seq_frames``: ``num_frames`` equal segments; a random frame of each in training, the
    middle one otherwise (SAMPLING_RATE is ignored)."""
    seg = (num_source - 1) / num_frames
    out = []
    for i in range(num_frames):
        start, end = int(np.round(seg * i)), int(np.round(seg * (i + 1)))
        out.append(int(torch.randint(start, end + 1, (), generator=rng)) if train else (start + end) // 2)
    return out


class SSv2Dataset(KineticsDataset):
    """Items are ``(source, label)``: a video file path, or a list of frame paths."""

    def load_frames(self, source: Any, clip_idx: int, rng: torch.Generator | None) -> torch.Tensor:
        train = self.mode == "train"
        if isinstance(source, (list, tuple)):
            idx = segment_indices(len(source), self.num_frames, train, rng)
            return read_frames([source[i] for i in idx])  # (T, C, H, W) RGB
        frames = _decode_all(source)
        idx = segment_indices(len(frames), self.num_frames, train, rng)
        return torch.stack([torch.from_numpy(frames[i].to_ndarray(format="rgb24")).permute(2, 0, 1) for i in idx])


def _decode_all(path: str) -> list:
    """Every frame of a (short) video as PyAV frames; only the sampled ones are converted to RGB."""
    import av

    with av.open(path) as container:
        frames = list(container.decode(video=0))
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return frames


class SSv2DataModule(KineticsDataModule):
    """SSv2 in its official layout; the other arguments are ``KineticsDataModule``'s (SSv2 defaults from spec
    §2.2: short-side jitter [256, 320] drawn inverse-uniformly, no flip, 1 clip x 3 crops at test)."""

    dataset_class = SSv2Dataset

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
        **kwargs: Any,
    ) -> None:
        if flip and not allow_flip:
            raise ValueError(FLIP_MESSAGE)
        if source not in ("frames", "video"):
            raise ValueError(f"source must be 'frames' or 'video', got {source!r}")
        super().__init__(
            root, num_classes, flip=flip, random_resized_crop=random_resized_crop, test_num_clips=test_num_clips,
            test_num_crops=test_num_crops, inverse_uniform_jitter=inverse_uniform_jitter, **kwargs,
        )  # fmt: skip
        self.source, self.video_dir, self.frame_list_dir, self.frame_dir = source, video_dir, frame_list_dir, frame_dir

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            from .synthetic_ssv2 import SyntheticSSv2Spec, make_synthetic_ssv2

            make_synthetic_ssv2(self.root, SyntheticSSv2Spec(**self.synthetic))

    def check_files(self, train: bool = True, test: bool = True) -> None:
        needed = [self.root / LABELS_FILE, self.root / SPLIT_FILES["val"]] + ([self.root / SPLIT_FILES["train"]] if train else [])
        if self.source == "frames":
            needed += [self.root / self.frame_list_dir / f"{s}.csv" for s in (["train", "val"] if train else ["val"])]
        for path in needed:
            if not path.is_file():
                raise FileNotFoundError(
                    f"SSv2 file not found: {path}\n  expected the official layout under data.root (see "
                    f"mvit_video/data/ssv2.py): {LABELS_FILE}, {SPLIT_FILES['train']}, {SPLIT_FILES['val']}, and "
                    f"{self.video_dir}/ID.webm (data.source=video) or {self.frame_list_dir}/{{train,val}}.csv"
                )

    @functools.cached_property
    def label_ids(self) -> dict[str, int]:
        """``{label: id}`` from the labels file, read once."""
        labels = json.loads((self.root / LABELS_FILE).read_text())
        ids = {name: int(i) for name, i in labels.items()}
        if len(ids) != self.num_classes:
            raise DatasetFormatError(f"{self.root / LABELS_FILE}: {len(ids)} labels for num_classes={self.num_classes}")
        return ids

    @functools.cached_property
    def class_names(self) -> list[str]:
        return sorted(self.label_ids, key=self.label_ids.get)

    def read_items(self, split: str) -> list[tuple[Any, int]]:
        ids = self.label_ids
        split = "train" if split == "train" else "val"  # the test split is the validation set
        path = self.root / SPLIT_FILES[split]
        entries = json.loads(path.read_text())
        frames = None
        if self.source == "frames":
            lists = read_frame_lists(self.root / self.frame_list_dir / f"{split}.csv")
            frames = {vid: [str(self.root / self.frame_dir / rel) for rel in rels] for vid, rels in lists.items()}
        items = []
        for entry in entries:
            name = template_to_label(entry["template"])
            if name not in ids:
                raise DatasetFormatError(f"{path}: video {entry['id']}: template {name!r} is not in {LABELS_FILE}")
            if frames is None:
                items.append((str(self.root / self.video_dir / f"{entry['id']}.webm"), ids[name]))
            elif str(entry["id"]) in frames:  # videos missing from the frame list are dropped, as SlowFast does
                items.append((frames[str(entry["id"])], ids[name]))
        if not items:
            raise DatasetFormatError(f"{path}: no videos (with frames) listed")
        return items
