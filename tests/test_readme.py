"""The README is executable: every command of its ```bash blocks, and its ```python blocks, runs here in tiny form.

Each README command goes to the first runner in ``RUNNERS`` whose pattern it matches. A runner runs the command as a
user does (from the repository root; ``python scripts/NAME.py`` through the script's ``main(argv)`` in this process,
the rest as a subprocess), with the placeholder paths (/data/kinetics400, /ckpts/...,
CKPT, clip.mp4, ...) replaced by fixtures, ``debug=tiny`` appended to ``train.py``, and every output in temporary
folders (``MVIT_DATA`` and ``hydra.run.dir``; nothing is written into the repository's logs/ or data/). A README
command that no runner matches fails: add a runner. Commands that another test runs for real (SLURM, resume after
a signal) are registered with that test's name, which must exist.

Shared artifacts are module fixtures: one tiny classification run (checkpoint), one tiny synthetic AVA run
(detector checkpoint, detections, annotations). Runners marked ``slow`` run in ``make test-slow``,
those marked ``e2e`` in ``make test-e2e``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .helpers import run_script

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT = 600
NUM_CLASSES = 4  # the tiny Kinetics-format set of conftest.tiny_kinetics
# Class names as real Kinetics ones: one and two spaces (prepare_kinetics must keep them whole).
SPACED_CLASSES = {"moving_left": "air drumming", "moving_right": "playing ice hockey"}


# ----------------------------------------------------------------------------------------------- the README's text
def readme_commands(text: str) -> list[tuple[str, str]]:
    """``(kind, command)`` for every command of a ```bash block (continuations joined, comments dropped) and every
    ```python block (whole)."""
    commands = []
    for lang, body in re.findall(r"^```(bash|python)\n(.*?)^```", text, re.S | re.M):
        if lang == "python":
            commands.append(("python", body))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(("bash", shlex.join(tokens)))
    return commands


# ------------------------------------------------------------------------------------------------------- helpers
def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``args`` as a user runs it from the repository root (``python`` = this interpreter); fails on a non-zero exit
    with the end of its output. ``python scripts/NAME.py ARGS`` runs in this process: the script's ``main`` parses
    exactly these ARGS (no interpreter start, torch already imported); ``train.py`` and the rest run as processes."""
    if args[:2] != ["python", "train.py"] and args[0] == "python" and re.fullmatch(r"scripts/\w+\.py", args[1]):
        with contextlib.chdir(ROOT), _environ(env or {}):
            res = run_script(args[1].removeprefix("scripts/"), *args[2:])
        res.args = args
    else:
        if args[0] == "python":
            args = [sys.executable, *args[1:]]
        res = subprocess.run(
            args, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    assert res.returncode == 0, f"{shlex.join(args)}\nexit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    """``env`` set in this process's environment for the block, as a subprocess's ``env=`` would give it."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def substitute(tokens: list[str], places: dict[str, str]) -> list[str]:
    """Replace placeholder tokens, whole or as the value of ``key=value``."""
    out = []
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if tok in places:
            tok = places[tok]
        elif eq and value in places:
            tok = f"{key}={places[value]}"
        out.append(tok)
    return out


def train(tokens: list[str], run_dir: Path, data_dir: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python train.py ...`` in tiny form: ``debug=tiny``, its run dir and data dir in tmp."""
    assert tokens[:2] == ["python", "train.py"], tokens
    tokens = [re.sub(r"^trainer\.devices=\d+$", "trainer.devices=1", t) for t in tokens]  # one CPU process
    return run([*tokens, "debug=tiny", *extra, f"hydra.run.dir={run_dir}"], env={"MVIT_DATA": str(data_dir)})


def _function_names(path: Path) -> set[str]:
    """The functions defined in a test file (to check that a registered test exists)."""
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """MVIT_DATA of every run here: the synthetic sets are generated once, into tmp."""
    return tmp_path_factory.mktemp("readme_data")


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_kinetics, data_dir) -> Path:
    """The README's own-dataset command, `python train.py data=kinetics data.root=DIR data.num_classes=K`, in tiny
    form: the run dir, with the tiny classification checkpoint the other commands use."""
    run_dir = tmp_path_factory.mktemp("cls_run")
    cmd = ["python", "train.py", "data=kinetics", f"data.root={tiny_kinetics}", f"data.num_classes={NUM_CLASSES}"]
    train(cmd, run_dir, data_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return run_dir


@pytest.fixture(scope="module")
def cls_ckpt(cls_run) -> Path:
    return cls_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def ava_run(tmp_path_factory, data_dir) -> Path:
    """`python train.py experiment=ava_synthetic` in tiny form: the detector checkpoint, detections and the
    synthetic AVA set (under MVIT_DATA/synthetic_ava)."""
    run_dir = tmp_path_factory.mktemp("ava_run")
    train(["python", "train.py", "experiment=ava_synthetic"], run_dir, data_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return run_dir


@pytest.fixture(scope="module")
def ava_root(ava_run, data_dir) -> Path:
    """The synthetic AVA set under the official AVA file names (conf/data/ava.yaml: the person detector's boxes)."""
    root = data_dir / "synthetic_ava"
    official = root / "annotations" / "person_box_67091280_iou90"
    official.mkdir(exist_ok=True)
    shutil.copy(root / "annotations" / "ava_val_predicted_boxes.csv", official / "ava_detection_val_boxes_and_labels.csv")
    train_props = official / "ava_detection_train_boxes_and_labels_include_negative_v2.2.csv"  # the paper's IoU > 0.9
    shutil.copy(root / "annotations" / "ava_train_predicted_boxes.csv", train_props)
    return root


@pytest.fixture(scope="module")
def ssv2_run(tmp_path_factory, data_dir) -> Path:
    """`python train.py experiment=ssv2_synthetic` in tiny form; it writes the synthetic SSv2 set."""
    run_dir = tmp_path_factory.mktemp("ssv2_run")
    train(["python", "train.py", "experiment=ssv2_synthetic"], run_dir, data_dir)
    return run_dir


@pytest.fixture(scope="module")
def ssv2_root(ssv2_run, data_dir) -> Path:
    return data_dir / "synthetic_ssv2"


@pytest.fixture(scope="module")
def clip(tmp_path_factory, tiny_kinetics) -> Path:
    """A video file with a space in its name."""
    src = tiny_kinetics / (tiny_kinetics / "test.csv").read_text().splitlines()[0].rsplit(" ", 1)[0]
    dst = tmp_path_factory.mktemp("clip") / "my clip.mp4"
    shutil.copy(src, dst)
    return dst


@pytest.fixture(scope="module")
def s3_bucket():
    """A real S3 API for the README's s3://bucket/... commands: moto's server on 127.0.0.1, dummy credentials in the
    environment (train.py's subprocess inherits them), the bucket ``bucket``."""
    pytest.importorskip("moto.server", reason="the stream extra is not installed")
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        boto3.client("s3").create_bucket(Bucket="bucket")
        yield "s3://bucket"
    server.stop()


# -------------------------------------------------------------------------------------------------------- runners
Runner = Callable[[list[str], pytest.FixtureRequest, Path], None]


def _fix(request: pytest.FixtureRequest, name: str):
    return request.getfixturevalue(name)


def run_make_demo(tokens, request, tmp):
    """`make demo`: the Makefile's demo recipe (the command, not the install), in tiny form."""
    recipe = re.search(r"^demo:.*\n\t\$\(PY\) (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "Makefile: no `demo:` target running $(PY) ..."
    cmd = ["python", *shlex.split(recipe.group(1))]
    assert cmd[:3] == ["python", "train.py", "experiment=demo"], cmd
    run_demo(cmd, request, tmp)


def run_demo(tokens, request, tmp):
    """The CPU demo: trains, tests, runs the time-shuffle control, writes the curves into its run dir."""
    train(tokens, tmp / "run", _fix(request, "data_dir"), extra=("data.time_shuffle_control=true",))
    assert (tmp / "run" / "checkpoints" / "last.ckpt").is_file() and (tmp / "run" / "curves.png").is_file()
    header = (tmp / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/top1", "test/top1", "test_time_shuffled/top1"} <= set(header), header


def run_make_test(tokens, request, tmp):
    """`make test`: this suite. The Makefile runs pytest on the fast tests."""
    assert re.search(r"^test:.*\n\t\$\(PY\) -m pytest", (ROOT / "Makefile").read_text(), re.M)


def run_own_dataset(tokens, request, tmp):
    """`python train.py data=kinetics data.root=DIR data.num_classes=K` (the pattern allows nothing else): the
    ``cls_run`` fixture runs it. It trained and tested with the defaults of a run without experiment."""
    from omegaconf import OmegaConf

    run_dir = _fix(request, "cls_run")
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert cfg.task_name == "train" and cfg.data.num_classes == NUM_CLASSES and not cfg.data.time_shuffle_control
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/top1", "test/top1"} <= set(header), header


def _kinetics_places(request) -> dict[str, str]:
    root = str(_fix(request, "tiny_kinetics"))
    return {"/data/kinetics400": root, "/data/kinetics600": root, "/data/kinetics700": root, "DIR": root, "K": str(NUM_CLASSES)}


def run_train_kinetics(tokens, request, tmp):
    """A Kinetics recipe on a Kinetics-format root: tiny form, with the tiny set's class count."""
    cmd = substitute(tokens, _kinetics_places(request))
    train(cmd, tmp / "run", _fix(request, "data_dir"), extra=(f"data.num_classes={NUM_CLASSES}",))
    assert (tmp / "run" / "checkpoints" / "last.ckpt").is_file()


def run_evaluate(tokens, request, tmp):
    """`train=false ckpt_path=CKPT`: the multi-view test of a checkpoint, no training."""
    places = {**_kinetics_places(request), "/path/to/best.ckpt": str(_fix(request, "cls_ckpt"))}
    res = train(substitute(tokens, places), tmp / "run", _fix(request, "data_dir"), extra=(f"data.num_classes={NUM_CLASSES}",))
    assert "test/top1" in res.stdout + res.stderr
    assert not (tmp / "run" / "checkpoints").exists()  # nothing trained


def run_prepare_kinetics(tokens, request, tmp):
    """prepare_kinetics on a folder-per-class tree whose class names hold spaces, as Kinetics' do."""
    from mvit_video.data.annotations import read_video_csv

    tree = tmp / "k400 videos"
    shutil.copytree(_fix(request, "tiny_kinetics") / "videos", tree)
    for split in tree.iterdir():
        for old, new in SPACED_CLASSES.items():
            (split / old).rename(split / new)
    out = tmp / "kinetics400"
    cmd = substitute(tokens, {"/data/k400_videos": str(tree), "/data/kinetics400": str(out), "320": "64"})
    run(cmd)
    names = (out / "classnames.txt").read_text().splitlines()
    assert set(SPACED_CLASSES.values()) <= set(names) and len(names) == NUM_CLASSES, names
    for split, per_class in (("train", 4), ("val", 2)):
        items = read_video_csv(out / f"{split}.csv", num_classes=NUM_CLASSES)
        assert sorted(label for _, label in items) == sorted(list(range(NUM_CLASSES)) * per_class), split
        for path, label in items:
            assert Path(path).is_file() and Path(path).parent.name == names[label], (path, label)


def run_loggers(tokens, request, tmp):
    """The demo in tiny form with other loggers: each one's files are in the run dir (tests/test_loggers.py reads
    the scalars back from each)."""
    pytest.importorskip("tensorboard")
    logger = next(t for t in tokens if t.startswith("logger="))
    names = logger.removeprefix("logger=").strip("[]").split(",")
    train(tokens, tmp / "run", _fix(request, "data_dir"))
    files = {"csv": "metrics.csv", "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlruns"}
    assert all((tmp / "run" / files[n]).exists() for n in names), sorted(p.name for p in (tmp / "run").iterdir())
    assert (tmp / "run" / "reports").is_dir()


def run_convert_checkpoint(tokens, request, tmp):
    """A SlowFast .pyth converted and reported; tiny form: the tiny preset's weights in SlowFast's format."""
    from mvit_video.models import build_model

    model_idx = tokens.index("--model") + 1
    pyth = tmp / "MViTv2_tiny_k400.pyth"
    state = build_model("mvitv2_tiny", num_classes=NUM_CLASSES).state_dict()
    torch.save({"model_state": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, pyth)
    cmd = [str(pyth) if t.endswith(".pyth") else t for t in tokens]
    cmd[model_idx] = "mvitv2_tiny"
    if "--to-hub" in tokens:  # a save_pretrained folder, loaded back
        from mvit_video import from_pretrained

        out = tmp / "s16"
        run(substitute(cmd, {tokens[tokens.index("--to-hub") + 1]: str(out)}))
        model = from_pretrained(out)
        assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "README.md"}
        assert torch.equal(model.model.state_dict()["head.projection.weight"], state["head.projection.weight"])
        return
    out = tmp / "converted.pt"
    cmd = substitute(cmd, {tokens[tokens.index("--out") + 1]: str(out)})
    res = run(cmd)
    assert "all keys and shapes match" in res.stdout and out.is_file()


def run_train_l_in21k(tokens, request, tmp):
    """The paper's two L stages in tiny form: stage 1 from an IN-21K-like image checkpoint (the tiny class-token image
    model in the official mvit file format, inflated by the experiment's init_mode), stage 2 from the tiny
    classification checkpoint (a video model)."""
    from mvit_video.models import build_model

    image = build_model("mvitv2_tiny", video=False, num_frames=1, num_classes=10, cls_token=True)
    pyth = tmp / "MViTv2_tiny_in21k.pyth"
    torch.save({"model_state": image.state_dict()}, pyth)
    places = {
        **_kinetics_places(request),
        "/ckpts/MViTv2_L_in21k.pyth": str(pyth),
        "/ckpts/k400_l_16x4.ckpt": str(_fix(request, "cls_ckpt")),
    }
    res = train(substitute(tokens, places), tmp / "run", _fix(request, "data_dir"), extra=(f"data.num_classes={NUM_CLASSES}",))
    assert (tmp / "run" / "checkpoints" / "last.ckpt").is_file()
    if "stage1" in tokens[2]:
        assert "inflate (center)" in res.stdout + res.stderr  # the image checkpoint went through the inflation


def run_train_images(tokens, request, tmp):
    """An image recipe in tiny form: ``data.root`` gets a small synthetic ImageFolder tree (class names with spaces);
    ``data=image_synthetic`` writes its own into the runs' data dir."""
    from mvit_video.data.synthetic_images import ImageSpec, make_synthetic_images

    root = make_synthetic_images(tmp / "imagenet", ImageSpec(num_classes=NUM_CLASSES, train_per_class=4, val_per_class=2))
    cmd = [t for t in substitute(tokens, {"/data/imagenet": str(root)}) if t != "debug=tiny"]  # train() adds it
    extra = () if "data=image_synthetic" in cmd else (f"data.num_classes={NUM_CLASSES}",)
    train(cmd, tmp / "run", _fix(request, "data_dir"), extra=extra)
    ckpt = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["mvit_video"]["model"]["video"] is False


def run_ava_train(tokens, request, tmp):
    """An AVA recipe in tiny form. ``init_from`` gets the tiny classification checkpoint (a classifier's head and all),
    ``data.root`` the synthetic AVA set under the official file names."""
    places = {"/data/ava": str(_fix(request, "ava_root")), "/ckpts/k400_mvitv2_s.ckpt": str(_fix(request, "cls_ckpt"))}
    cmd = substitute(tokens, places)
    if cmd == ["python", "train.py", "experiment=ava_synthetic"]:
        run_dir = _fix(request, "ava_run")  # the shared run is this very command
    else:
        run_dir = tmp / "run"
        train(cmd, run_dir, _fix(request, "data_dir"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    _detections(run_dir)


def run_ssv2(tokens, request, tmp):
    """An SSv2 recipe in tiny form; ``data.root`` gets the synthetic SSv2 set (official layout, frame folders, its
    8 templates), ``init_from`` the tiny classification checkpoint."""
    if tokens == ["python", "train.py", "experiment=ssv2_synthetic"]:
        run_dir = _fix(request, "ssv2_run")  # the shared run is this very command
    else:
        places = {"/data/ssv2": str(_fix(request, "ssv2_root")), "/ckpts/k400_mvitv2_s.ckpt": str(_fix(request, "cls_ckpt"))}
        run_dir = tmp / "run"
        train(substitute(tokens, places), run_dir, _fix(request, "data_dir"), extra=("data.num_classes=8",))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def run_benchmark_train(tokens, request, tmp):
    """A UCF101/HMDB51/Charades experiment in tiny form on a synthetic copy of its official layout (4 classes),
    from the tiny classification checkpoint."""
    from mvit_video.data import synthetic_benchmarks

    name = next(t for t in tokens if t.startswith("experiment=")).removeprefix("experiment=").split("_")[0]
    root = getattr(synthetic_benchmarks, f"make_synthetic_{name}")(tmp / name, workers=0)
    places = {f"/data/{name}": str(root), "/ckpts/k400_mvitv2_s.ckpt": str(_fix(request, "cls_ckpt"))}
    train(substitute(tokens, places), tmp / "run", _fix(request, "data_dir"), extra=("data.num_classes=4",))
    header = (tmp / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert ("test/mAP" if name == "charades" else "test/top1") in header, header


def run_split_protocol(tokens, request, tmp):
    """The 3-split multirun and ``split_mean.py`` on its folder: run for real, in that order, by
    tests/test_benchmarks_data.py (``make test-e2e``); here the multirun's overrides compose."""
    from hydra import compose, initialize_config_dir

    from mvit_video.train import register_resolvers

    assert "test_ucf101_three_splits_and_their_mean" in _function_names(ROOT / "tests" / "test_benchmarks_data.py")
    if tokens[:3] == ["python", "train.py", "-m"]:
        overrides = [t.split(",")[0] for t in tokens[3:]]
        register_resolvers()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "paths.output_dir=."])
        assert cfg.data.split == 1


_SHARD_PLACES = {"400": str(NUM_CLASSES), "8": "2", "320": "48"}  # the tiny set's classes, 2 cores, its small frames


def run_make_shards(tokens, request, tmp):
    """The tiny Kinetics set into the local S3 bucket; the manifest counts its videos."""
    from mvit_video.data.streaming import read_manifest

    _fix(request, "s3_bucket")
    cmd = substitute(tokens, {**_SHARD_PLACES, "/data/kinetics400": str(_fix(request, "tiny_kinetics"))})
    uri = cmd[cmd.index("--out") + 1]
    run([*cmd, "--work-dir", str(tmp / "work")])
    manifest = read_manifest(uri)
    assert len(manifest.samples("train")) == 16 and len(manifest.class_names) == NUM_CLASSES, manifest.splits.keys()


def run_train_stream(tokens, request, tmp):
    """A Kinetics recipe streamed from shards in the local S3 bucket, in tiny form."""
    bucket = _fix(request, "s3_bucket")
    uri = f"{bucket}/readme-train"
    root = str(_fix(request, "tiny_kinetics"))
    run(["python", "scripts/make_shards.py", root, "--out", uri, "--set", f"num_classes={NUM_CLASSES}", "--work-dir", str(tmp)])
    cmd = [t if not t.startswith("data.uri=") else f"data.uri={uri}" for t in tokens]
    train(cmd, tmp / "run", _fix(request, "data_dir"), extra=(f"data.num_classes={NUM_CLASSES}",))
    assert (tmp / "run" / "checkpoints" / "last.ckpt").is_file()


def run_bench_stream(tokens, request, tmp):
    """The streaming benchmark on the tiny set, few batches: a files row, a stream row and their ratio."""
    cmd = substitute(tokens, {**_SHARD_PLACES, "/data/kinetics400": str(_fix(request, "tiny_kinetics"))})
    res = run([*cmd, "crop_size=32", "train_jitter_scales=[32,40]", "num_frames=4", "--batches", "3", "--batch-size", "2"])
    assert "stream / files: " in res.stdout, res.stdout


def run_finetune(tokens, request, tmp):
    """A fine-tune on a folder per class (the synthetic direction classes, mp4/mkv/webm/avi) from the tiny
    classification checkpoint, in tiny form: the split file is written and the mode's option reaches the task."""
    from omegaconf import OmegaConf

    from mvit_video.data.synthetic_folder import FolderSpec, make_synthetic_folder

    root = make_synthetic_folder(tmp / "my videos", FolderSpec(per_class=4), workers=0)
    places = {"/my/videos": str(root), "/ckpts/k400_mvitv2_s.ckpt": str(_fix(request, "cls_ckpt"))}
    train(substitute(tokens, places), tmp / "run", _fix(request, "data_dir"))
    cfg = OmegaConf.load(tmp / "run" / ".hydra" / "config.yaml")
    assert (root / "splits.json").is_file() and (tmp / "run" / "checkpoints" / "last.ckpt").is_file()
    for option in (t for t in tokens if t.startswith("task.")):
        key, value = option.split("=")
        assert str(OmegaConf.select(cfg, key)).lower() == value, (key, OmegaConf.select(cfg, key))


def _detections(run_dir: Path) -> Path:
    """The run's validation detections CSV (one file, all ranks' rows)."""
    found = sorted((run_dir / "detections").glob("detections_val*.csv"))
    assert len(found) == 1, f"expected one detections CSV in {run_dir / 'detections'}, found {found}"
    return found[0]


def _ava_places(request) -> dict[str, str]:
    ann = _fix(request, "ava_root") / "annotations"
    run_dir = _fix(request, "ava_run")
    return {
        "ava_action_list_v2.2_for_activitynet_2019.pbtxt": str(ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"),
        "ava_val_v2.2.csv": str(ann / "ava_val_v2.2.csv"),
        "ava_val_excluded_timestamps_v2.2.csv": str(ann / "ava_val_excluded_timestamps_v2.2.csv"),
        "detections.csv": str(_detections(run_dir)),
        "AVA.ckpt": str(run_dir / "checkpoints" / "last.ckpt"),
        "data/ava/frames/VIDEO": str(_fix(request, "ava_root") / "frames" / "val000"),
    }


def run_ava_eval(tokens, request, tmp):
    """The evaluator on the tiny run's detections: one JSON line whose mAP is the run's logged val/mAP."""
    res = run(substitute(tokens, _ava_places(request)))
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert 0.0 <= result["mAP"] <= 1.0
    rows = (_fix(request, "ava_run") / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [float(r.split(",")[header.index("val/mAP")]) for r in rows[1:] if r.split(",")[header.index("val/mAP")]]
    assert result["mAP"] == logged[-1]  # exactly: the metric rounds as the CSV and ranks as the official evaluator


def run_bench_ava_eval(tokens, request, tmp):
    """The evaluator benchmark, on a small problem (the README's default is 1,000,000 detections)."""
    res = run([*tokens, "--detections", "5000", "--groundtruth", "500", "--repeats", "1"])
    assert "speed-up" in res.stdout, res.stdout


def run_predict(tokens, request, tmp):
    ckpt = str(_fix(request, "cls_ckpt"))
    places = {"clip.mp4": str(_fix(request, "clip")), "logs/demo/runs/<date>/checkpoints/last.ckpt": ckpt, "CKPT": ckpt}
    res = run(substitute(tokens, places))
    names = torch.load(_fix(request, "cls_ckpt"), map_location="cpu", weights_only=True)["mvit_video"]["class_names"]
    assert "my clip.mp4" in res.stdout and sum(name in res.stdout for name in names) == NUM_CLASSES, res.stdout


def run_export(tokens, request, tmp):
    out = tmp / Path(tokens[tokens.index("--out") + 1]).name
    res = run(substitute(tokens, {"CKPT": str(_fix(request, "cls_ckpt")), tokens[tokens.index("--out") + 1]: str(out)}))
    assert out.is_file() and out.stat().st_size > 0, res.stdout


def run_ava_demo(tokens, request, tmp):
    """The demo on frames with a box file, or on a raw video with a person detector. The README's torchvision detector
    needs COCO weights nothing here can download: the documented stand-in (``mvit_video.persons.ColourBoxDetector``,
    through the same ``--detector module:factory`` plumbing) takes its place, on a clip the ffmpeg CLI writes."""
    out = tmp / "demo.mp4"
    places = {**_ava_places(request), "demo.mp4": str(out)}
    if "--detector" in tokens:
        clip = tmp / "clip.mp4"
        ffmpeg = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=30:d=3", "-pix_fmt", "yuv420p"]
        subprocess.run([*ffmpeg, str(clip)], check=True)
        i = tokens.index("--detector")
        tokens = [*tokens[:i], "--detector", "mvit_video.persons:ColourBoxDetector", *tokens[i + 2 :]]
        j = tokens.index("--detector-weights")
        tokens = tokens[:j] + tokens[j + 2 :]
        places["VIDEO.mp4"] = str(clip)
    res = run(substitute(tokens, places))
    assert out.stat().st_size > 0 and res.stdout.count('"second"') >= 1
    assert out.with_suffix(".csv").is_file() and (tmp / "demo_timeline.png").is_file()


CVAT_XML = (
    '<?xml version="1.0"?><annotations><version>1.1</version><meta><task><size>31</size><original_size><width>64</width>'
    '<height>48</height></original_size></task></meta><track id="0" label="person"><box frame="0" outside="0" occluded="0"'
    ' keyframe="1" xtl="0" ytl="0" xbr="32" ybr="48"><attribute name="action">stand</attribute></box></track></annotations>'
)


def run_cvat_to_ava(tokens, request, tmp):
    """A one-track CVAT export (a person standing in the left half for 31 frames at 30 fps): two AVA keyframes."""
    (tmp / "annotations.xml").write_text(CVAT_XML)
    out = tmp / "my_ava"
    run(substitute(tokens, {"annotations.xml": str(tmp / "annotations.xml"), "data/my_ava": str(out)}))
    rows = sorted(line for f in out.rglob("*.csv") for line in f.read_text().splitlines())
    assert rows == [f"my_video,{sec},0.000,0.000,0.500,1.000,1,0" for sec in ("0900", "0901")], rows


def run_predict_window(tokens, request, tmp):
    """A timeline over the tiny test video: CSV, JSON and PNG, windows covering it."""
    ckpt = str(_fix(request, "cls_ckpt"))
    out = tmp / "timeline"
    run(substitute(tokens, {"VIDEO.mp4": str(_fix(request, "clip")), "CKPT": ckpt, "timeline/": str(out)}))
    timeline = json.loads(next(out.glob("*.timeline.json")).read_text())
    assert timeline and next(out.glob("*.timeline.csv")).is_file() and next(out.glob("*.timeline.png")).is_file()


def run_extract_features(tokens, request, tmp):
    """Features of a folder of two videos: one .npy of [num_windows, C] and one .json each; a rerun does nothing."""
    import numpy as np

    videos = tmp / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(_fix(request, "clip"), videos / name)
    out = tmp / "features"
    cmd = substitute(tokens, {"videos/": str(videos), "CKPT": str(_fix(request, "cls_ckpt")), "features/": str(out)})
    run(cmd)
    arrays = {p.stem: np.load(p) for p in out.glob("*.npy")}
    assert set(arrays) == {"a", "b"} and all(a.ndim == 2 and len(a) >= 1 for a in arrays.values()), arrays
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    run(cmd)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes  # finished videos are not redone


def run_slurm(tokens, request, tmp):
    """Run for real on a 2-node Slurm cluster by tests/test_slurm.py (``make test-slurm``); here the command's
    overrides must compose (the first value of each sweep)."""
    from hydra import compose, initialize_config_dir

    from mvit_video.train import register_resolvers

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the slurm extra is not installed")
    names = _function_names(ROOT / "tests" / "test_slurm.py")
    assert {
        "test_two_nodes_train_as_one_process_with_the_same_global_batch",
        "test_a_two_point_sweep_submits_two_jobs_and_finds_both_results",
    } <= names
    overrides = [t.split(",")[0] for t in tokens[2:] if t != "-m"]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "paths.output_dir=."], return_hydra_config=True)
    assert "SlurmLauncher" in cfg.hydra.launcher._target_


def run_resume(tokens, request, tmp):
    """`hydra.run.dir=<run dir> ckpt_path=last`: a one-epoch run, then the command as written (two epochs) goes on
    from its last.ckpt in the same run dir and continues its metrics.csv. Stops by signal and the exactness of the
    resumed weights are tests/test_stops.py's (real signals to a real `python train.py`)."""
    import csv

    import torch

    run_dir, data_dir = tmp / "run", _fix(request, "data_dir")
    places = {**_kinetics_places(request), "RUN_DIR": str(run_dir)}
    cmd = substitute(tokens, places)
    extra = (f"data.num_classes={NUM_CLASSES}", "test=false")
    train([t for t in cmd if t != "ckpt_path=last"], run_dir, data_dir, extra=extra)
    first = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    train(cmd, run_dir, data_dir, extra=(*extra, "trainer.max_epochs=2"))
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (resumed["epoch"], resumed["global_step"]) == (1, 2 * first)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    steps = sorted({int(r["step"]) for r in rows if r.get("train/loss_step")})
    assert steps == list(range(2 * first)), steps  # the first run's rows kept, the resumed ones appended, once


def run_signal(tokens, request, tmp):
    """A signal sent to a running job (``kill -INT/-TERM/-USR2 PID``, ``scancel --signal=USR2 JOBID``, ``timeout``):
    run for real by tests/test_stops.py (by hand) and tests/test_slurm.py (under Slurm)."""
    run_resume(tokens, request, tmp)
    if tokens[0] == "scancel":
        assert "test_preemption_signal_requeues_and_resumes_to_the_same_result" in _function_names(
            ROOT / "tests" / "test_slurm.py"
        )


def run_make_target(tokens, request, tmp):
    """``make TARGET`` other than demo/test: the Makefile has the target (they install, run suites or benchmarks)."""
    assert re.search(rf"^{re.escape(tokens[1])}:", (ROOT / "Makefile").read_text(), re.M), f"Makefile: no {tokens[1]}"


def run_pip_install(tokens, request, tmp):
    """``pip install 'mvit_video[extra]'`` / ``'.[extra]'``: every extra named is declared in pyproject.toml."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^([\w-]+)\s*=", section, re.M))
    named = [e for t in tokens[2:] for e in re.findall(r"\[([^\]]+)\]", t) for e in e.split(",")]
    assert named and set(named) <= set(extras), (named, sorted(extras))


def run_model_report(tokens, request, tmp):
    """The model report, for one preset (all of them take minutes of FLOP counting); ``--experiments`` as written
    (FLOPs counted on meta tensors)."""
    if "--experiments" in tokens:
        res = run(tokens)
        assert "every experiment with a paper row has its views and GFLOPs" in res.stdout, res.stdout
        return
    res = run([*tokens, "--only", "mvitv2_s_16x4"] if "--only" not in tokens else tokens)
    assert "all parameter counts equal" in res.stdout, res.stdout


def run_recipe_diff(tokens, request, tmp):
    """Run by tests/test_configs.py::test_recipe_diff_passes_on_every_experiment."""
    assert "test_recipe_diff_passes_on_every_experiment" in _function_names(ROOT / "tests" / "test_configs.py")


def run_make_synthetic(tokens, request, tmp):
    """A synthetic Kinetics-format set, small: 2 classes, 1 video per class and split."""
    out = tmp / "synthetic"
    cmd = [
        *tokens[:2],
        str(out),
        *tokens[3:],
        "--num-classes",
        "2",
        "--train-per-class",
        "1",
        "--val-per-class",
        "1",
        "--test-per-class",
        "1",
        "--workers",
        "1",
    ]
    run(cmd)
    assert (out / "train.csv").is_file()


def run_python_block(code, request, tmp):
    """A ```python block, as written, with its placeholder files replaced by fixtures."""
    places = {'"last.ckpt"': repr(str(_fix(request, "cls_ckpt"))), '"clip.mp4"': repr(str(_fix(request, "clip")))}
    if "from_pretrained(" in code:  # the sharing block: "s16/" is a save_pretrained folder of the tiny checkpoint
        import mvit_video

        classifier = mvit_video.load(_fix(request, "cls_ckpt"))
        mvit_video.save_pretrained(classifier, tmp / "s16")
        places.update({'"s16/"': repr(str(tmp / "s16")), '"my_model/"': repr(str(tmp / "my_model"))})
        places.update({'"mvitv2_s_16x4"': repr(classifier.model.preset), 'torch.hub.load(".",': f"torch.hub.load({str(ROOT)!r},"})
    if ".pyth" in code:  # the checkpoints block: `model` (from the block above) and a SlowFast file for it
        from mvit_video.models import build_model

        pyth = tmp / "weights.pyth"
        model = build_model("mvitv2_s_16x4", num_classes=400)
        torch.save({"model_state": {f"module.{k}": v for k, v in model.state_dict().items()}}, pyth)
        places.update({m: repr(str(pyth)) for m in re.findall(r'"[^"]+\.pyth"', code)})
        code = "from mvit_video.models import build_model\nmodel = build_model('mvitv2_s_16x4', num_classes=400)\n" + code
    for old, new in places.items():
        code = code.replace(old, new)
    exec(compile(code, "README.md python block", "exec"), {})  # as pasted into a Python session


@dataclass(frozen=True)
class Entry:
    pattern: str  # re.search over the command (python blocks: over the code)
    runner: Runner
    mark: str = ""  # a marker of the ladder in pyproject.toml ("slow", "e2e"): the CI stage that runs it


RUNNERS: list[Entry] = [
    Entry(r"^make demo$", run_make_demo, mark="e2e"),
    Entry(r"^make test$", run_make_test),
    Entry(r"-m hydra/launcher=slurm", run_slurm),
    Entry(r"ckpt_path=last", run_resume, mark="slow"),
    Entry(r"^(kill|scancel|timeout) ", run_signal),
    Entry(r"^make (install|test-e2e|test-slow|test-slurm|gpu-check|lint|bench|report|clean)$", run_make_target),
    Entry(r"^pip install ", run_pip_install),
    Entry(r"^python scripts/model_report\.py", run_model_report, mark="slow"),
    Entry(r"^python scripts/recipe_diff\.py", run_recipe_diff),
    Entry(r"^python scripts/make_synthetic\.py \S+", run_make_synthetic, mark="slow"),
    Entry(r"^python train\.py experiment=demo .*logger=", run_loggers, mark="slow"),
    Entry(r"^python train\.py experiment=demo\b", run_demo),
    Entry(r"^python train\.py .*train=false .*ckpt_path=", run_evaluate),
    Entry(r"^python train\.py data=kinetics data\.root=\S+ data\.num_classes=\S+$", run_own_dataset),
    Entry(r"^python train\.py .*data\.source=stream", run_train_stream, mark="slow"),
    Entry(r"^python scripts/make_shards\.py ", run_make_shards, mark="slow"),
    Entry(r"^python scripts/bench_stream\.py ", run_bench_stream, mark="slow"),
    Entry(r"^python train\.py experiment=k[0-9]+_mvitv2_l_in21k_stage[12] ", run_train_l_in21k, mark="slow"),
    Entry(r"^python train\.py experiment=k[0-9]+_mvitv2_\w+ ", run_train_kinetics, mark="slow"),
    Entry(r"^python train\.py experiment=in1k_mvitv2_\w+ ", run_train_images, mark="slow"),
    Entry(r"^python train\.py experiment=ava_", run_ava_train, mark="slow"),
    Entry(r"^python train\.py experiment=ssv2_", run_ssv2, mark="slow"),
    Entry(r"^python train\.py experiment=finetune ", run_finetune, mark="slow"),
    Entry(r"^python train\.py experiment=(ucf101|hmdb51|charades)_", run_benchmark_train, mark="slow"),
    Entry(
        r"^python train\.py -m experiment=(ucf101|hmdb51)_.*data\.split=1,2,3|^python scripts/split_mean\.py ", run_split_protocol
    ),
    Entry(r"^python scripts/prepare_kinetics\.py ", run_prepare_kinetics),
    Entry(r"^python scripts/convert_checkpoint\.py ", run_convert_checkpoint),
    Entry(r"^python scripts/ava_eval\.py ", run_ava_eval, mark="slow"),
    Entry(r"^python scripts/bench_ava_eval\.py", run_bench_ava_eval, mark="slow"),
    Entry(r"^python scripts/predict\.py .*--window ", run_predict_window, mark="slow"),
    Entry(r"^python scripts/predict\.py ", run_predict),
    Entry(r"^python scripts/extract_features\.py ", run_extract_features, mark="slow"),
    Entry(r"^python scripts/cvat_to_ava\.py ", run_cvat_to_ava),
    Entry(r"^python scripts/export\.py ", run_export, mark="slow"),
    Entry(r"^python scripts/ava_demo\.py ", run_ava_demo, mark="slow"),
    Entry(r"import mvit_video\nmodel = mvit_video\.load\(", run_python_block),
    Entry(r"mvit_video\.from_pretrained\(", run_python_block),
    Entry(r"from mvit_video\.models\.convert import load_pretrained", run_python_block, mark="slow"),
    Entry(r"from mvit_video\.models import build_model, list_models", run_python_block, mark="slow"),
]


def _find(command: str) -> Entry | None:
    return next((e for e in RUNNERS if re.search(e.pattern, command, re.M)), None)


def _params():
    params = []
    for i, (kind, command) in enumerate(readme_commands(README.read_text())):
        entry = _find(command)
        label = command.splitlines()[0][:60] if kind == "bash" else f"python block: {command.splitlines()[0][:40]}"
        marks = [getattr(pytest.mark, entry.mark)] if entry and entry.mark else []
        params.append(pytest.param(kind, command, entry, marks=marks, id=f"{i:02d} {label}"))
    return params


@pytest.mark.parametrize(("kind", "command", "entry"), _params())
def test_readme_command_runs(kind, command, entry, request, tmp_path):
    if entry is None:
        pytest.fail(f"README.md command with no runner: {command!r}: add a runner to tests/test_readme.py RUNNERS")
    entry.runner(shlex.split(command) if kind == "bash" else command, request, tmp_path)


def test_every_readme_command_is_found():
    """The parser sees the README's commands (continuation lines joined, comments dropped)."""
    commands = [c for k, c in readme_commands(README.read_text()) if k == "bash"]
    assert commands and not [c for c in commands if "\\" in c or " #" in c]
    joined = readme_commands("```bash\npython a.py x \\\n    y  # note\n\n```\n")
    assert joined == [("bash", "python a.py x y")]
