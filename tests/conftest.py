import os

import pytest
import torch

from .helpers import make_tiny_dataset

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
