#!/usr/bin/env python
"""Convert CVAT "CVAT for video 1.1" XML exports into AVA's annotation layout, to train on your own videos.

    python scripts/cvat_to_ava.py annotations.xml --out data/my_ava --split train --video-id my_video
    python scripts/cvat_to_ava.py a.xml b.xml --out data/my_ava --split val --labelmap ava_action_list_v2.2.pbtxt

Writes ``OUT/annotations/ava_<split>_v2.2.csv`` (``video,sec,x1,y1,x2,y2,action,person_id``: boxes normalised,
3 decimals, one row per action, one keyframe per second) and the label map
``OUT/annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt`` (the names ``conf/data/ava.yaml`` reads).

The XML, as CVAT's docs ("XML annotation format", Interpolation) and exporter describe it: ``<track id label
[group_id]>`` elements holding ``<box frame xtl ytl xbr ybr outside occluded keyframe>`` in pixels of
``meta/.../original_size``, each box with ``<attribute name="...">value</attribute>`` children. CVAT's own export
writes every frame of a track (interpolated ones with ``keyframe="0"``); hand-made or trimmed files may hold only
the keyframes. Both read the same: a track is at frame f when its last box at or before f is not ``outside``;
between two boxes it is interpolated linearly (CVAT's rule for rectangles), after its last box it stays where it
was until the task's last frame; attributes come from the box at or before f. Occluded boxes count as persons.

Actions, in any mix: tracks labelled ``--person-label`` (``person``) are persons whose actions are their boxes'
attributes: a checkbox attribute that is ``true`` names an action (``<attribute name="stand">true</attribute>``),
and the values of the ``--action-attribute`` attribute (``action``; a select, or text with comma-separated
names) are actions. A track with any other label is one person doing that action (label = action name); tracks
of the same person done per action share CVAT's ``group_id``, which becomes their person id.

Keyframe seconds: frame ``round(s * fps)`` is second ``first_second + s`` (``--fps``: the task's frame rate, 30 as
AVA; ``--first-second``: 900 as AVA's layout). Errors name the XML line.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

TRUE = {"true", "1", "yes"}


class CvatFormatError(ValueError):
    """An XML file that is not a readable "CVAT for video 1.1" export; the message names the file and line."""


@dataclass
class Node:
    """An XML element with the line it starts on (expat knows it; ElementTree forgets it)."""

    tag: str
    attrib: dict[str, str]
    line: int
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def find(self, path: str) -> Node | None:
        """The first descendant at ``a/b/c`` below this node, any depth for a leading ``//``."""
        parts = path.strip("/").split("/")
        nodes = list(self.iter(parts[0])) if path.startswith("//") else [c for c in self.children if c.tag == parts[0]]
        for part in parts[1:]:
            nodes = [c for n in nodes for c in n.children if c.tag == part]
        return nodes[0] if nodes else None

    def iter(self, tag: str):
        for child in self.children:
            if child.tag == tag:
                yield child
            yield from child.iter(tag)


def parse_xml(path: Path) -> Node:
    """The element tree of ``path`` with line numbers; a syntax error names its line."""
    parser = expat.ParserCreate()
    stack: list[Node] = [Node("#document", {}, 0)]

    def start(tag: str, attrib: dict[str, str]) -> None:
        node = Node(tag, attrib, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    try:
        with path.open("rb") as f:
            parser.ParseFile(f)
    except expat.ExpatError as e:
        raise CvatFormatError(f"{path}:{e.lineno}: not well-formed XML ({expat.ErrorString(e.code)})") from e
    return stack[0]


@dataclass
class Box:
    frame: int
    xyxy: tuple[float, float, float, float]  # pixels
    outside: bool
    attributes: dict[str, str]
    line: int


@dataclass
class Track:
    id: int
    label: str
    group: int
    boxes: list[Box]  # sorted by frame
    line: int

    def at(self, frame: int) -> Box | None:
        """The track's box at ``frame`` (interpolated between boxes, held after the last), None where absent."""
        prev = next_ = None
        for b in self.boxes:
            if b.frame <= frame:
                prev = b
            else:
                next_ = b
                break
        if prev is None or prev.outside:
            return None
        if prev.frame == frame or next_ is None:
            return prev
        w = (frame - prev.frame) / (next_.frame - prev.frame)
        xyxy = tuple(p + w * (n - p) for p, n in zip(prev.xyxy, next_.xyxy))
        return Box(frame, xyxy, False, prev.attributes, prev.line)  # type: ignore[arg-type]


def _number(path: Path, node: Node, key: str, kind=float):
    if key not in node.attrib:
        raise CvatFormatError(f"{path}:{node.line}: <{node.tag}> has no '{key}' attribute")
    try:
        return kind(node.attrib[key])
    except ValueError:
        raise CvatFormatError(f"{path}:{node.line}: <{node.tag}> {key}={node.attrib[key]!r} is not a number") from None


@dataclass
class Export:
    """One CVAT for video export: its tracks of boxes, frame size, last frame and declared attributes."""

    path: Path
    video_id: str
    width: float
    height: float
    last_frame: int
    tracks: list[Track]
    checkbox: set[str]  # attributes declared as checkboxes
    declared_actions: list[str]  # action names in the order the task declares them


def read_export(path: Path, args: argparse.Namespace) -> Export:
    root = parse_xml(path).find("annotations")
    if root is None:
        raise CvatFormatError(f"{path}:1: no <annotations> root; expected a 'CVAT for video 1.1' export")
    image = root.find("image")
    if image is not None:
        raise CvatFormatError(
            f"{path}:{image.line}: <image> elements: this is a 'CVAT for images' export; export the task as 'CVAT for video 1.1'"
        )
    version = root.find("version")
    if version is not None and version.text.strip() != "1.1":
        raise CvatFormatError(f"{path}:{version.line}: format version {version.text.strip()!r}; this reads 1.1")
    meta = root.find("meta") or Node("meta", {}, 1)
    width, height = args.width, args.height
    size = meta.find("//original_size")
    if size is not None and width is None:
        w, h = size.find("width"), size.find("height")
        try:
            width, height = float(w.text), float(h.text)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            raise CvatFormatError(f"{path}:{size.line}: <original_size> needs numeric <width> and <height>") from None
    if width is None or height is None:
        raise CvatFormatError(f"{path}:{meta.line}: no <original_size> in <meta>: give the frame size with --width and --height")
    frames = meta.find("//size")
    checkbox, declared = set(), []
    for label in meta.iter("label"):
        name = label.find("name")
        label_name = name.text.strip() if name is not None else ""
        if label_name and label_name != args.person_label:
            declared.append(label_name)  # a label per action
        for attr in label.iter("attribute"):
            kind, attr_name, values = attr.find("input_type"), attr.find("name"), attr.find("values")
            if attr_name is None:
                continue
            if kind is not None and kind.text.strip() == "checkbox":
                checkbox.add(attr_name.text.strip())
                declared.append(attr_name.text.strip())
            elif attr_name.text.strip() == args.action_attribute and values is not None:
                declared += [v.strip() for v in values.text.splitlines() if v.strip()]
    tracks = []
    for t in root.iter("track"):
        boxes = []
        for b in t.children:
            if b.tag != "box":
                continue  # polygons, points ...: not persons
            xyxy = tuple(_number(path, b, k) for k in ("xtl", "ytl", "xbr", "ybr"))
            if not (xyxy[2] > xyxy[0] and xyxy[3] > xyxy[1]):
                raise CvatFormatError(f"{path}:{b.line}: box with xbr <= xtl or ybr <= ytl: {xyxy}")
            attrs = {a.attrib.get("name", ""): a.text.strip() for a in b.children if a.tag == "attribute"}
            outside = b.attrib.get("outside", "0") == "1"
            boxes.append(Box(_number(path, b, "frame", int), xyxy, outside, attrs, b.line))  # type: ignore[arg-type]
        boxes.sort(key=lambda b: b.frame)
        for a, b in zip(boxes, boxes[1:]):
            if a.frame == b.frame:
                raise CvatFormatError(f"{path}:{b.line}: track {t.attrib.get('id')} has two boxes on frame {b.frame}")
        if boxes:
            track_id, group = _number(path, t, "id", int), int(t.attrib.get("group_id", "0") or 0)
            tracks.append(Track(track_id, t.attrib.get("label", ""), group, boxes, t.line))
    last = max([b.frame for t in tracks for b in t.boxes], default=0)
    if frames is not None and frames.text.strip().isdigit():
        last = max(last, int(frames.text) - 1)
    source, name = meta.find("//source"), meta.find("//task/name")
    video_id = args.video_id or (
        Path(source.text.strip()).stem
        if source is not None and source.text.strip()
        else (name.text if name is not None else path.stem)
    )
    video_id = re.sub(r"[\s,]+", "_", video_id.strip())
    return Export(path, video_id, width, height, last, tracks, checkbox, declared)


def actions_of(box: Box, track: Track, export: Export, args: argparse.Namespace) -> list[str]:
    """The action names of one person box (see the module doc)."""
    names = [] if track.label == args.person_label else [track.label]
    for key, value in box.attributes.items():
        if key == args.action_attribute:
            names += [v.strip() for v in value.split(",") if v.strip()]
        elif (key in export.checkbox or value.lower() in ("true", "false")) and value.lower() in TRUE:
            names.append(key)
    return list(dict.fromkeys(names))


def convert(
    exports: list[Export], args: argparse.Namespace, label_ids: dict[str, int] | None
) -> tuple[list[str], dict[str, int]]:
    """AVA ground-truth rows of all exports and the label map ``{name: id}`` (new ids in declaration order)."""
    from mvit_video.metrics.ava_frame_map import BOX_DECIMALS

    ids = dict(label_ids or {})
    rows: list[tuple[str, int, int, int, str]] = []
    for ex in exports:
        if label_ids is None:
            for name in ex.declared_actions:
                ids.setdefault(name, len(ids) + 1)
        group_base = max([t.id for t in ex.tracks], default=0) + 1  # group ids after the track ids: no clash
        for s in range(int(ex.last_frame / args.fps) + 1):
            frame = round(s * args.fps)
            if frame > ex.last_frame:
                break
            for track in ex.tracks:
                box = track.at(frame)
                if box is None:
                    continue
                person = group_base + track.group if track.group else track.id
                x1, y1, x2, y2 = box.xyxy
                coords = [min(max(v, 0.0), 1.0) for v in (x1 / ex.width, y1 / ex.height, x2 / ex.width, y2 / ex.height)]
                xyxy = ",".join(f"{c:.{BOX_DECIMALS}f}" for c in coords)
                for name in actions_of(box, track, ex, args):
                    if name not in ids:
                        if label_ids is not None:
                            raise CvatFormatError(
                                f"{ex.path}:{box.line}: action {name!r} is not in the label map {args.labelmap}"
                            )
                        ids[name] = len(ids) + 1
                    line = f"{ex.video_id},{args.first_second + s:04d},{xyxy},{ids[name]},{person}"
                    rows.append((ex.video_id, s, person, ids[name], line))
    return [r[-1] for r in sorted(rows)], ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("xml", nargs="+", help="'CVAT for video 1.1' annotations.xml (one per video)")
    parser.add_argument("--out", required=True, help="dataset root; writes OUT/annotations/")
    parser.add_argument("--split", default="train", help="the CSV's split name: ava_<split>_v2.2.csv (train, val)")
    parser.add_argument("--video-id", default=None, help="the video id (one XML only; default: the task's source or name)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second of the annotated task (AVA: 30)")
    parser.add_argument("--first-second", type=int, default=900, help="the second of frame 0 (AVA's layout: 900)")
    parser.add_argument("--person-label", default="person", help="the label of person tracks (actions in attributes)")
    parser.add_argument("--action-attribute", default="action", help="a person attribute whose value names the action")
    parser.add_argument("--labelmap", default=None, help="an existing label-map pbtxt to take the action ids from")
    parser.add_argument("--width", type=float, default=None, help="frame width in pixels (if the XML has no original_size)")
    parser.add_argument("--height", type=float, default=None, help="frame height in pixels")
    args = parser.parse_args(argv)
    if args.video_id and len(args.xml) > 1:
        parser.error("--video-id names one video; give one XML with it")
    if args.fps <= 0:
        parser.error(f"--fps must be > 0, got {args.fps}")
    if (args.width is None) != (args.height is None):
        parser.error("give both --width and --height, or neither")
    from mvit_video.metrics.ava_frame_map import AVAFormatError, read_labelmap

    try:
        label_ids = {v: k for k, v in read_labelmap(args.labelmap).items()} if args.labelmap else None
        exports = [read_export(Path(p), args) for p in args.xml]
        rows, ids = convert(exports, args, label_ids)
    except (CvatFormatError, AVAFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ann = Path(args.out) / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    csv = ann / f"ava_{args.split}_v2.2.csv"
    csv.write_text("".join(r + "\n" for r in rows))
    labelmap = ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
    labelmap.write_text(
        "".join(f'label {{\n  name: "{n}"\n  label_id: {i}\n}}\n' for n, i in sorted(ids.items(), key=lambda kv: kv[1]))
    )
    persons = {(r.split(",")[0], r.split(",")[-1]) for r in rows}
    print(f"wrote {csv}: {len(rows)} rows, {len(persons)} persons in {len(exports)} video(s); {labelmap}: {len(ids)} actions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
