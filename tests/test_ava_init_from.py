"""AVA fine-tuning from a classification checkpoint, as the README runs it: ``experiment=ava_... init_from=CKPT``."""

import logging

import torch

import mvit_video.train as train_module
from mvit_video.train import run

from .helpers import ava_tiny_run, compose_cfg

# The classifier gets the backbone of conf/model/ava_detector_tiny.yaml (3 stages), so its weights fit the detector.
CLASSIFIER = [
    "model.name=mvitv2_tiny",
    "++model.depths=[1,2,2]",
    "trainer=cpu",
    "data.num_classes=4",
    "data.num_workers=0",
    "data.batch_size=4",
    "data.crop_size=48",
    "data.num_frames=8",
    "data.train_jitter_scales=[48,60]",
    "data.test_short_side=48",
    "data.test_num_clips=1",
    "data.test_num_crops=1",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "test=false",
    "data.time_shuffle_control=false",
    "callbacks.progress_bar=null",
    "data.synthetic=null",
]
AVA = ava_tiny_run(val_videos=1)


def test_ava_training_initialised_from_a_classification_checkpoint(tmp_path, tiny_kinetics, monkeypatch, caplog):
    run(compose_cfg([*CLASSIFIER, f"data.root={tiny_kinetics}"], tmp_path / "cls", tmp_path / "data"))
    ckpt = tmp_path / "cls" / "checkpoints" / "last.ckpt"
    saved = {k.removeprefix("net."): v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}
    assert "head.projection.weight" in saved  # a real classifier, head included

    loaded = {}

    def spy(model, path, **kw):  # the real loader; keeps a copy of what it loaded, before training changes it
        out = real(model, path, **kw)
        loaded.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return out

    real = train_module.load_pretrained
    monkeypatch.setattr(train_module, "load_pretrained", spy)
    with caplog.at_level(logging.INFO, logger="mvit_video.models.convert"):
        metrics = run(compose_cfg([*AVA, f"init_from={ckpt}"], tmp_path / "ava", tmp_path / "data"))
    assert 0.0 <= metrics["val/mAP"] <= 1.0
    assert loaded and not any(k.startswith("head.") for k in loaded)
    for key, value in loaded.items():
        expected = saved[key]
        if "rel_pos" in key and expected.shape != value.shape:
            continue  # resized to the detector's token grid (tested in test_models)
        assert torch.equal(value, expected), key
    assert sum("rel_pos" not in k for k in loaded) > 10
    assert "dropping the checkpoint's head.projection.bias, head.projection.weight" in caplog.text
