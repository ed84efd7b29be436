"""scripts/ava_eval.py on malformed and incomplete files: strict JSON on stdout, or one `file:line` error and exit 2."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABELMAP = 'item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\nitem {\n  name: "crouch/kneel"\n  id: 3\n}\n'
GT = "vidA,0902,0.1,0.1,0.4,0.4,1,0\nvidA,0902,0.1,0.1,0.4,0.4,3,0\nvidA,0903,0.5,0.5,0.9,0.9,1,1\nvidB,0905\n"
DET = "vidA,0902,0.1,0.1,0.4,0.4,1,0.9\nvidA,0902,0.1,0.1,0.4,0.4,3,0.8\nvidA,0903,0.5,0.5,0.9,0.9,1,0.7\n"


def _strict_json(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _files(tmp_path, labelmap=LABELMAP, gt=GT, det=DET, excl="vidB,0906\n"):
    paths = {}
    files = (("-l", "labelmap.pbtxt", labelmap), ("-g", "gt.csv", gt), ("-d", "det.csv", det), ("-e", "excl.csv", excl))
    for flag, name, text in files:
        (tmp_path / name).write_text(text)
        paths[flag] = tmp_path / name
    return [str(a) for flag, path in paths.items() for a in (flag, path)]


def _subprocess(args):
    res = subprocess.run([sys.executable, "scripts/ava_eval.py", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return res.returncode, res.stdout, res.stderr


def _in_process(args, capsys, monkeypatch):
    """The script's own code path (argument parsing, errors, exit status) without another interpreter start."""
    monkeypatch.setattr(sys, "argv", ["ava_eval.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "scripts" / "ava_eval.py"), run_name="__main__")
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_groundtruth_without_action_column_is_an_error_not_nan(tmp_path, capsys, monkeypatch):
    gt = "vidA,0902,0.1,0.1,0.4,0.4\nvidA,0903,0.5,0.5,0.9,0.9\n"  # boxes only: there is nothing to evaluate
    code, out, err = _in_process(_files(tmp_path, gt=gt), capsys, monkeypatch)
    assert code == 2 and out == ""
    assert f"{tmp_path / 'gt.csv'}:1: 6 fields; expected 7 or 8" in err and "Traceback" not in err


def test_label_map_class_without_groundtruth_is_null_in_strict_json(tmp_path):
    """A real interpreter start: what a shell or a pipeline into `jq` sees."""
    labelmap = LABELMAP + 'item {\n  name: "dance"\n  id: 11\n}\n'  # no ground truth of id 11
    code, out, err = _subprocess(_files(tmp_path, labelmap=labelmap))
    assert code == 0, err
    res = _strict_json(out)
    assert res["per_class"] == {"bend/bow (at the waist)": 1.0, "crouch/kneel": 1.0, "dance": None}
    assert res["classes_without_groundtruth"] == ["dance"] and res["mAP"] == 1.0  # left out of the mean, as officially


@pytest.mark.parametrize(
    ("which", "text", "message"),
    [
        (
            "det",
            "video_id,timestamp,x1,y1,x2,y2,action_id,score\n" + DET,
            "det.csv:1: field 2 (second) is 'timestamp', not a number (a header line?",
        ),
        ("det", DET + "vidA,0903,0.5,0.5,0.9\n", "det.csv:4: 5 fields; expected 7 or 8"),
        ("gt", "vidA,0902,0.1,0.1\n" + GT, "gt.csv:1: 4 fields; expected 7 or 8"),
        ("det", DET + "vidA,0903,0.5,0.5,0.9,0.9,1,0.7,extra\n", "det.csv:4: 9 fields; expected 7 or 8"),
        ("det", DET + "vidA,0903,0.5,0.5,0.9,0.9,1,0.7,8,9\n", "det.csv:4: 10 fields; expected 7 or 8"),
        ("det", "vidA,0902,0.1,abc,0.4,0.4,1,0.9\n" + DET, "det.csv:1: field 4 (y1) is 'abc', not a number"),
        ("det", DET + "vidA,0902,0.1,0.1,0.4,0.4,,0.9\n", "det.csv:4: field 7 (action_id) is empty"),
        ("gt", GT + "vidA,0904,0.1,0.1,0.4,0.4,walk,0\n", "gt.csv:5: field 7 (action_id) is 'walk', not a number"),
        ("gt", GT + "vidA,0904,0.1,0.1,0.4,0.4,1.5,0\n", "gt.csv:5: field 7 (action_id) is '1.5', not an integer"),
        ("excl", "vidB,0906,1\n", "excl.csv:1: ['vidB', '0906', '1']; expected 'video_id,second'"),
        ("gt", "vidA,0902\nvidA,0902,0.1,0.1,0.4,0.4,2,0\n", "gt.csv: no ground-truth box of any of the 2 classes"),
        ("labelmap", "item {\n}\n", "labelmap.pbtxt: no 'name:' / 'id:' entries found"),
    ],
)
def test_malformed_files_give_one_error_line_and_exit_2(tmp_path, capsys, monkeypatch, which, text, message):
    code, out, err = _in_process(_files(tmp_path, **{which: text}), capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err
    assert str(tmp_path) in err  # the file is named with its full path


def test_missing_file_is_named(tmp_path, capsys, monkeypatch):
    args = _files(tmp_path)
    args[args.index("-d") + 1] = str(tmp_path / "nope.csv")
    code, out, err = _in_process(args, capsys, monkeypatch)
    assert code == 2 and "nope.csv" in err and out == ""


def test_valid_files_still_give_strict_json(tmp_path, capsys, monkeypatch):
    code, out, err = _in_process(_files(tmp_path), capsys, monkeypatch)
    assert code == 0, err
    res = _strict_json(out)
    assert res["mAP"] == 1.0 and res["classes_without_groundtruth"] == []
