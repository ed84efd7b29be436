"""mvit_video: MViTv2 for video recognition and AVA detection on current PyTorch."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``mvit_video.load``, ``save_pretrained``, ``from_pretrained`` without importing the training stack at
    ``import mvit_video``."""
    if name == "load":
        from .inference import load

        return load
    if name in ("save_pretrained", "from_pretrained"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'mvit_video' has no attribute {name!r}")
