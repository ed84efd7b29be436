import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from .helpers import make_tiny_dataset

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# cuda joins cpu where a GPU exists, so the same tests check the GPU kernels (make gpu-check) and nothing changes here.
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@contextmanager
def no_tf32() -> Iterator[None]:
    """cuBLAS matmuls and cuDNN convs in full fp32 inside, the flags restored after. TF32 rounds their inputs to a
    10-bit mantissa (relative error 2^-11 instead of fp32's 2^-24), so fp32 bounds would not hold with it on."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(params=DEVICES, ids=DEVICES)
def device(request) -> Iterator[torch.device]:
    """The device a test runs on: ``cpu``, and ``cuda`` too where one is available (ids ``[cpu]``/``[cuda]``).
    On cuda the test runs under ``no_tf32``, so its fp32 tolerances hold there too; a test that wants TF32 sets it."""
    dev = torch.device(request.param)
    if dev.type != "cuda":
        yield dev
        return
    with no_tf32():
        yield dev


@pytest.fixture(scope="session")
def tiny_kinetics(tmp_path_factory):
    """A 4-class Kinetics-format dataset of real mp4 files (16 train, 8 val, 8 test videos)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny_kinetics")


@pytest.fixture(scope="session")
def video_zoo(tmp_path_factory):
    """Real-world files written by the ffmpeg CLI (``tests/video_zoo.py``), once per session: ``{name: path}``."""
    from .video_zoo import has_ffmpeg, write_zoo

    if not has_ffmpeg():
        pytest.skip("the ffmpeg CLI is not installed (Debian: apt install ffmpeg); it writes the video zoo")
    return write_zoo(tmp_path_factory.mktemp("zoo"))
