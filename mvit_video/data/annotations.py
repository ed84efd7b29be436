"""Readers of the official annotation files, and their format error: stdlib only (no torch), so that command-line
tools which only check or convert annotations start fast.

- Kinetics format (spec §6.1): ``{train,val,test}.csv`` lines ``path label`` and ``classnames.txt``.
- Something-Something-v2 (spec §6.2): the labels JSON and the train/validation JSON files.
- AVA (spec §4.1) and SSv2 frame folders: the 5-column frame lists; AVA box CSVs as training targets. AVA's label
  map and excluded timestamps are the evaluator's readers (``metrics.ava_frame_map``), one copy for both.

Every format error names the file and the line.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections import defaultdict
from pathlib import Path

CSV_FORMAT = (
    "UTF-8 text, one video per line: 'path label' separated by a space, the label being the last field (paths may "
    "contain spaces), or 'path fn label', or 'path' alone (label 0)"
)
VIDEO_EXTS = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"}
FOREIGN_SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon"}
FRAME_LIST_FORMAT = "original_video_id video_id frame_id path labels"


class DatasetFormatError(ValueError):
    """A malformed annotation file; the message names the file, the line and the expected format."""


# Kinetics format ------------------------------------------------------------------------------------------------


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every line of a UTF-8 file (a byte-order mark is dropped, not glued to the first
    path). Bytes that are not UTF-8 (a Latin-1 or UTF-16 file) are an error naming the line: a path decoded with
    the wrong encoding would name a file that does not exist."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    lines = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append((lineno, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            bad = raw[e.start : e.start + 4]
            raise DatasetFormatError(
                f"{path}:{lineno}: bytes {bad!r} at column {e.start + 1} are not UTF-8; expected a UTF-8 text file "
                f"(convert it, e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix})"
            ) from None
    return lines


def _foreign_separator(line: str, sep: str) -> str:
    """' (the line looks tab-separated)', or '' when no other usual separator is in it."""
    found = [name for s, name in FOREIGN_SEPARATORS.items() if s != sep and s in line]
    return f" (the line looks {'/'.join(found)}-separated)" if found else ""


def parse_video_line(path: Path, lineno: int, line: str, num_classes: int, sep: str, prefix: Path) -> tuple[str, int]:
    """One ``path label`` line: the label is the last field, everything before it is the path (spaces and all).
    ``path fn label`` (a frame count in the middle, as frame-folder lists have) is read as such only when the
    path with the count in it does not exist and the shorter one does, or neither exists and the path has no
    other separator. Two or more fields after a video file name (``a.mp4 1 2 3``) are extra columns, unless a
    file of that whole name exists."""
    fields = line.rsplit(sep, 1)
    if len(fields) == 1:
        hint = _foreign_separator(line, sep)
        if hint:  # 'a.mp4,3' or 'a.mp4\t3': one column, which would silently become label 0
            raise DatasetFormatError(f"{path}:{lineno}: no {sep!r} separator in {line!r}{hint}; expected {CSV_FORMAT}")
        return _join(prefix, line), 0
    video, label_text = fields
    try:
        label = int(label_text)
    except ValueError:
        raise DatasetFormatError(
            f"{path}:{lineno}: label {label_text!r} is not an integer{_foreign_separator(line, sep)}; expected {CSV_FORMAT}"
        ) from None
    if not 0 <= label < num_classes:
        raise DatasetFormatError(
            f"{path}:{lineno}: label {label} is out of range [0, {num_classes}) (data.num_classes={num_classes})"
        )
    tokens = video.split(sep)
    ends = [i for i, tok in enumerate(tokens[:-2]) if Path(tok).suffix.lower() in VIDEO_EXTS]
    if ends and not Path(_join(prefix, video)).exists():  # 'a.mp4 1 2 3': columns after a file name, not a name
        raise DatasetFormatError(f"{path}:{lineno}: {len(tokens) + 1} columns in {line!r}; expected {CSV_FORMAT}")
    head, _, middle = video.rpartition(sep)
    if head and middle.isdigit():  # 'path fn label' or a file name ending in ' 12'
        whole, short = _join(prefix, video), _join(prefix, head)
        exists_whole, exists_short = Path(whole).exists(), Path(short).exists()
        if exists_short and not exists_whole or not exists_whole and sep not in head:
            return short, label
        return whole, label
    return _join(prefix, video), label


def _join(prefix: Path, video: str) -> str:
    return video if Path(video).is_absolute() else str(prefix / video)


def read_video_csv(path: str | Path, num_classes: int, sep: str = " ", prefix: str | Path = "") -> list[tuple[str, int]]:
    """``(video path, label)`` of every line; format errors name the file and the line (``CSV_FORMAT``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file not found: {path}\n  expected {CSV_FORMAT}.\n"
            "  Make it from a folder-per-class tree of videos with: "
            "python scripts/prepare_kinetics.py VIDEO_DIR --out DATA_ROOT"
        )
    items = [
        parse_video_line(path, lineno, line.strip(), num_classes, sep, Path(prefix))
        for lineno, line in read_text_lines(path)
        if line.strip()
    ]
    if not items:
        raise DatasetFormatError(f"{path}: no videos listed; expected {CSV_FORMAT}")
    return items


def read_classnames(path: str | Path, num_classes: int) -> list[str]:
    """One class name per line, in label order: a blank line inside, a repeated name or a count other than
    ``num_classes`` would put the wrong names on the classes (and fail at the first checkpoint save)."""
    path = Path(path)
    lines = [(n, text.strip()) for n, text in read_text_lines(path)]
    while lines and not lines[-1][1]:
        lines.pop()
    seen: dict[str, int] = {}
    for lineno, name in lines:
        if not name:
            raise DatasetFormatError(f"{path}:{lineno}: empty line; expected one class name per line, in label order")
        if name in seen:
            raise DatasetFormatError(f"{path}:{lineno}: class name {name!r} again (first on line {seen[name]})")
        seen[name] = lineno
    if len(lines) != num_classes:
        where = f"; line {num_classes + 1} is {lines[num_classes][1]!r}" if len(lines) > num_classes else ""
        raise DatasetFormatError(
            f"{path}: {len(lines)} class names for num_classes={num_classes}{where}; expected one name per line, in "
            f"label order (or set data.num_classes={len(lines)})"
        )
    return [name for _, name in lines]


# Something-Something-v2 -----------------------------------------------------------------------------------------


def template_to_label(template: str) -> str:
    """A split file's template (``Moving [something] up``) as the labels file names it (``Moving something up``)."""
    return template.replace("[", "").replace("]", "")


def read_ssv2_labels(path: str | Path, num_classes: int) -> dict[str, int]:
    """``{label: id}`` from ``something-something-v2-labels.json``; its size must be ``num_classes``."""
    path = Path(path)
    ids = {name: int(i) for name, i in json.loads(path.read_text()).items()}
    if len(ids) != num_classes:
        raise DatasetFormatError(f"{path}: {len(ids)} labels for num_classes={num_classes}")
    return ids


def read_ssv2_split(path: str | Path, label_ids: dict[str, int]) -> list[tuple[str, int]]:
    """``(video id, label id)`` of every entry of a train/validation JSON file; a template that is not in the
    labels file is an error naming the video."""
    path = Path(path)
    items = []
    for entry in json.loads(path.read_text()):
        name = template_to_label(entry["template"])
        if name not in label_ids:
            raise DatasetFormatError(f"{path}: video {entry['id']}: template {name!r} is not in the labels file")
        items.append((str(entry["id"]), label_ids[name]))
    return items


# Frame lists (AVA, SSv2 frames) and AVA boxes -------------------------------------------------------------------


def read_frame_lists(path: str | Path) -> dict[str, list[str]]:
    """``{video id: [frame paths in list order]}`` from an official frame list (header line skipped): the 5-column
    format of AVA and SSv2."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame list not found: {path} (columns: {FRAME_LIST_FORMAT})")
    frames: dict[str, list[str]] = defaultdict(list)
    with path.open() as f:
        next(f, None)  # header
        for lineno, line in enumerate(f, start=2):
            cols = line.split()
            if not cols:
                continue
            if len(cols) < 4:
                raise DatasetFormatError(f"{path}:{lineno}: expected '{FRAME_LIST_FORMAT}'")
            frames[cols[0]].append(cols[3])
    return dict(frames)


Boxes = dict[tuple[str, int], dict[tuple[float, ...], set[int]]]


def read_boxes(path: str | Path, is_groundtruth: bool, score_threshold: float = 0.0) -> Boxes:
    """``{(video, second): {box: {action ids}}}``. Boxes are grouped by their exact coordinate text, as the
    official loader does. Column 8 is a person id in ground truth (never a score) and a score in detections,
    whose rows below ``score_threshold`` are dropped. An empty action gives a box without labels."""
    out: Boxes = defaultdict(dict)
    with Path(path).open() as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if len(row) == 2:
                continue  # a keyframe marked as having no action (newer 2-column rows)
            if len(row) < 6:
                raise DatasetFormatError(f"{path}:{lineno}: expected 'video,sec,x1,y1,x2,y2,action,person_or_score'")
            if not is_groundtruth and len(row) > 7 and row[7] and float(row[7]) < score_threshold:
                continue
            key = (row[0], int(float(row[1])))
            box = tuple(float(v) for v in row[2:6])
            labels = out[key].setdefault(box, set())
            if len(row) > 6 and row[6].strip():
                labels.add(int(row[6]))
    return dict(out)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes (0 for disjoint or empty boxes)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_proposals(proposals: Boxes, groundtruth: Boxes, min_iou: float) -> Boxes:
    """The paper's training proposals (arXiv 2112.01526v2 §B.6): detector boxes whose IoU with a ground-truth box of
    the same keyframe is strictly above ``min_iou`` (an IoU, not a detector score). Each kept box carries its own
    labels (if its file has any) and those of its best-matching ground-truth box: it shows the same person."""
    out: Boxes = {}
    for key, boxes in proposals.items():
        gt = groundtruth.get(key, {})
        for box, labels in boxes.items():
            best, best_iou = None, min_iou
            for gt_box in gt:
                iou = box_iou(box, gt_box)
                if iou > best_iou:
                    best, best_iou = gt_box, iou
            if best is not None:
                out.setdefault(key, {})[box] = set(labels) | gt[best]
    return out
