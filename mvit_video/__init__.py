"""mvit_video: MViTv2 for video recognition and AVA detection on current PyTorch."""

__version__ = "0.1.0"
