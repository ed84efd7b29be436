from .classification import VideoClassificationModule
from .mixup import MixupCutmix
from .optim import param_groups, warmup_cosine

__all__ = ["MixupCutmix", "VideoClassificationModule", "param_groups", "warmup_cosine"]
