"""``torch.hub`` entry points, one per registered preset (``mvit_video.models.list_models()``):

    model = torch.hub.load("path/to/mvit_video", "mvitv2_s_16x4", source="local", weights="mvitv2-s-k400/")

``weights``: a ``save_pretrained`` directory or Hub id, a ``.safetensors`` file, a ``train.py`` checkpoint or an
official SlowFast / mvit / torchvision / timm checkpoint (``mvit_video.hub.load_preset``); none: random init.
Other keyword arguments override the preset's config (``num_classes=...``).
"""

from collections.abc import Callable as _Callable

import mvit_video.hub as _hub
import mvit_video.models as _models

dependencies = ["torch", "safetensors"]  # mvit_video itself: this repository (torch.hub puts it on sys.path)


def _entry(preset: str) -> _Callable:
    def entry(weights=None, **kwargs):
        return _hub.load_preset(preset, weights, **kwargs)

    entry.__name__ = entry.__qualname__ = preset
    entry.__doc__ = f"{_models.registry._MODELS[preset].__doc__}\n\n{_hub.load_preset.__doc__}"
    return entry


for _preset in _models.list_models():  # generated from the registry, never listed by hand
    globals()[_preset] = _entry(_preset)
