"""save_pretrained / from_pretrained (safetensors, config.json, model card), convert_checkpoint --to-hub, hubconf."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

import mvit_video
from mvit_video.hub import PretrainedFormatError
from mvit_video.inference import Preprocessing, VideoClassifier
from mvit_video.models import build_model, list_models

from .helpers import CONF_DIR, run_script

REPO = Path(CONF_DIR).parent
NAMES = ("left", "right", "up")
PRE = Preprocessing(8, 2, 64, (0.45,) * 3, (0.225,) * 3, NAMES, test_num_clips=2)


def _classifier() -> VideoClassifier:
    torch.manual_seed(0)
    return VideoClassifier(build_model("mvitv2_tiny", num_classes=len(NAMES)), PRE)


def _video() -> torch.Tensor:
    return torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1))  # (B, C, T, H, W)


@torch.inference_mode()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    return model.eval()(_video())  # (1, K)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Every tensor bit-equal (then so are the logits; cheaper than a forward on a loaded CPU)."""
    sa, sb = getattr(a, "model", a).state_dict(), getattr(b, "model", b).state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _classifier()
    out = mvit_video.save_pretrained(model, tmp_path_factory.mktemp("hub") / "tiny", source_checkpoint="run/last.ckpt")
    return model, out, _logits(model)


def test_round_trip_gives_identical_logits(saved):
    _, out, expected = saved
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = mvit_video.from_pretrained(out)
    assert isinstance(loaded, VideoClassifier) and not loaded.training
    assert loaded.preprocessing == PRE
    assert torch.equal(_logits(loaded), expected)


def test_config_and_model_card(saved):
    _, out, _ = saved
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "mvitv2_tiny" and config["model"]["num_classes"] == 3 and config["model"]["embed_dim"] == 32
    assert config["preprocessing"]["class_names"] == list(NAMES) and config["preprocessing"]["sampling_rate"] == 2
    assert config["source"]["checkpoint"] == "run/last.ckpt" and config["source"]["license"] == "other"
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])  # the Hub's model-card metadata
    assert front["library_name"] == "mvit_video" and front["license"] == "other"
    assert {"mvitv2", "mvitv2_tiny", "video-classification"} <= set(front["tags"])


class _Bomb:
    """Unpickling it creates ``marker``: what a malicious pickled checkpoint could do (any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_files_are_never_opened(saved, tmp_path):
    """A directory with pickles beside the safetensors: only model.safetensors and config.json are read."""
    _, out, _ = saved
    bomb = pickle.dumps(_Bomb(tmp_path / "proof"))
    pickle.loads(bomb)
    assert (tmp_path / "proof").is_file()  # the bomb works when unpickled
    marker = tmp_path / "ran"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("model.safetensors", "config.json"):
        (mixed / name).write_bytes((out / name).read_bytes())
    for name in ("pytorch_model.bin", "model.ckpt", "model.pth"):
        (mixed / name).write_bytes(pickle.dumps(_Bomb(marker)))
    mvit_video.from_pretrained(mixed)
    only_pickles = tmp_path / "only_pickles"
    only_pickles.mkdir()
    (only_pickles / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb(marker)))
    (only_pickles / "config.json").write_bytes((out / "config.json").read_bytes())
    with pytest.raises(PretrainedFormatError, match="needs model.safetensors"):
        mvit_video.from_pretrained(only_pickles)
    assert not marker.exists()


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import; the env for new ones
    with pytest.raises(PretrainedFormatError, match="could not fetch .*HF_HUB_OFFLINE is set"):
        mvit_video.from_pretrained("mvit-video-tests/no-such-model")


def test_hub_id_downloads_only_weights_config_and_card(saved, monkeypatch):
    import huggingface_hub

    model, out, _ = saved
    asked = {}

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        asked.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = mvit_video.from_pretrained("org/tiny", revision="v1")
    assert asked == {"repo_id": "org/tiny", "revision": "v1", "allow_patterns": ["model.safetensors", "config.json", "README.md"]}
    assert _same_weights(loaded, model)


def test_convert_official_checkpoint_to_hub(saved, tmp_path):
    """An official SlowFast-layout file (``model_state``) with a class-name file -> the Hub layout, same logits;
    with --out too, both are written (--to-hub is not "instead")."""
    model = saved[0].model
    src = tmp_path / "official.pyth"
    torch.save({"model_state": model.state_dict(), "cfg": "..."}, src)
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "hub"
    result = run_script(
        "convert_checkpoint.py", src, "--model", "mvitv2_tiny", "--to-hub", out, "--class-names", tmp_path / "names.txt",
        "--out", tmp_path / "s.pt",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pt = torch.load(tmp_path / "s.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(pt[f"net.{k}"], v) for k, v in model.state_dict().items())
    loaded = mvit_video.from_pretrained(out)
    assert loaded.preprocessing.class_names == NAMES and loaded.preprocessing.num_frames == 8
    config = json.loads((out / "config.json").read_text())
    assert config["source"]["format"] == "slowfast" and config["source"]["license"] == "apache-2.0"
    assert _same_weights(loaded, model)  # bit-equal tensors: the round trip test shows logits follow


def test_convert_our_checkpoint_keeps_its_preprocessing(saved, tmp_path):
    from dataclasses import asdict

    model = saved[0].model
    meta = {"preset": "mvitv2_tiny", "model": model.cfg.to_dict(), **asdict(PRE)}
    src = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}, "mvit_video": meta}, src)
    result = run_script("convert_checkpoint.py", src, "--model", "mvitv2_tiny", "--to-hub", tmp_path / "hub")
    assert result.returncode == 0, result.stderr
    assert mvit_video.from_pretrained(tmp_path / "hub").preprocessing == PRE


def test_torch_hub_local_entries(saved, tmp_path):
    """One entry per registered preset; ``weights``: a save_pretrained directory, a .safetensors file, our .ckpt."""
    import importlib.util

    from safetensors.torch import save_file

    model, out, _ = saved
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")}
    assert entries == set(list_models())  # what torch.hub.list shows (it takes no local dir): the registry, no more
    save_file(model.model.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"net.{k}": v for k, v in model.model.state_dict().items()}}, tmp_path / "w.ckpt")
    for weights in (out, tmp_path / "w.safetensors", tmp_path / "w.ckpt"):
        loaded = torch.hub.load(str(REPO), "mvitv2_tiny", source="local", weights=str(weights))
        assert _same_weights(loaded, model), weights
    from dataclasses import asdict

    ours = tmp_path / "last.ckpt"  # train.py's: the preprocessing comes with it
    meta = {"preset": "mvitv2_tiny", "model": model.model.cfg.to_dict(), **asdict(PRE)}
    torch.save({"state_dict": {f"net.{k}": v for k, v in model.model.state_dict().items()}, "mvit_video": meta}, ours)
    loaded = torch.hub.load(str(REPO), "mvitv2_tiny", source="local", weights=str(ours))
    assert loaded.preprocessing == PRE and _same_weights(loaded, model)
    for weights in (out, ours):  # another preset's entry refuses them
        with pytest.raises(PretrainedFormatError, match="holds mvitv2_tiny, not mvitv2_s_16x4"):
            torch.hub.load(str(REPO), "mvitv2_s_16x4", source="local", weights=str(weights))


def test_safetensors_of_another_preset_is_refused_by_name(saved, tmp_path):
    """save_pretrained writes the preset into the safetensors metadata: another entry names it, not missing keys."""
    _, out, _ = saved
    with pytest.raises(PretrainedFormatError, match="holds mvitv2_tiny, not mvitv2_s_16x4"):
        mvit_video.hub.load_preset("mvitv2_s_16x4", out / "model.safetensors")


@pytest.mark.slow  # builds torchvision's mvit_v2_s and MViTv2-S: ~3 s
def test_torchvision_safetensors_loads(tmp_path):
    """A torchvision-layout state dict saved as .safetensors is renamed like its .pth (it was refused: missing keys)."""
    from safetensors.torch import save_file
    from torchvision.models.video import mvit_v2_s

    from mvit_video.models.convert import convert_state_dict

    torch.manual_seed(0)
    tv = mvit_v2_s().state_dict()
    save_file({k: v.contiguous() for k, v in tv.items()}, tmp_path / "tv.safetensors")
    loaded = mvit_video.hub.load_preset("mvitv2_s_16x4", tmp_path / "tv.safetensors")
    expected = convert_state_dict(tv, "torchvision", loaded)
    assert expected.keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
