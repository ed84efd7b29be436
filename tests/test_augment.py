"""The recipe's clip augmentations, each shown to have its effect (spec §2.3)."""

import pytest
import torch

from mvit_video.data.augment import ClipRandAugment, CubeRandomErasing
from mvit_video.data.clips import collate_clips
from mvit_video.data.transforms import ClipTransform
from mvit_video.tasks.mixup import MixupCutmix


def _clip(t: int = 6, h: int = 40, w: int = 48) -> torch.Tensor:
    """Frames that differ from each other (a moving gradient), so per-frame randomness would show."""
    base = torch.linspace(0, 255, w).repeat(h, 1)
    frames = [torch.stack([(base + 20 * i) % 256, base.flip(1), (base * 0.5 + 9 * i) % 256]) for i in range(t)]
    return torch.stack(frames).to(torch.uint8)  # (T, 3, H, W)


def test_randaugment_parses_the_official_string_and_rejects_others():
    ra = ClipRandAugment("rand-m7-n4-mstd0.5-inc1")
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.prob) == (7.0, 4, 0.5, 0.5)
    assert "SolarizeAdd" in ra.names and "PosterizeIncreasing" in ra.names and len(ra.names) == 15
    with pytest.raises(ValueError, match="inc1"):
        ClipRandAugment("rand-m9-n2")
    with pytest.raises(ValueError, match="unknown"):
        ClipRandAugment("rand-m7-x3-inc1")


@pytest.mark.parametrize("name", list(ClipRandAugment().names))
def test_every_randaugment_op_is_the_same_op_on_every_frame(name):
    """Applying an op to the whole clip equals applying it to each frame alone with the same random draw."""
    ra = ClipRandAugment("rand-m7-n1-mstd0-inc1")
    clip = _clip()
    torch.manual_seed(3)
    whole = ra.apply(clip, [(name, 7.0)])
    for i in range(clip.shape[0]):
        torch.manual_seed(3)  # the op's own draws (sign of the magnitude) repeat
        assert torch.equal(whole[i], ra.apply(clip[i : i + 1], [(name, 7.0)])[0]), f"{name} differs at frame {i}"


def test_randaugment_changes_clips_with_one_draw_per_clip():
    ra = ClipRandAugment("rand-m7-n4-mstd0.5-inc1")
    clip = _clip()
    torch.manual_seed(0)
    outs = [ra(clip) for _ in range(8)]
    assert sum(not torch.equal(o, clip) for o in outs) >= 6  # n4 with p 0.5: almost always something applies
    draws = [ra.sample() for _ in range(200)]
    assert all(len(d) <= 4 and all(0 <= m <= 10 for _, m in d) for d in draws)
    assert 1.5 < sum(len(d) for d in draws) / 200 < 2.5  # each of 4 ops kept with probability 0.5


def test_erasing_is_one_rectangle_on_every_frame_with_fresh_noise():
    video = torch.zeros(6, 3, 32, 32)
    torch.manual_seed(0)
    erased = CubeRandomErasing(p=1.0)(video)
    mask = erased != 0  # (T, C, H, W)
    assert mask.any()
    assert all(torch.equal(mask[0], mask[i]) for i in range(6))  # the same rectangle in all frames
    rows, cols = mask[0, 0].any(1).nonzero(), mask[0, 0].any(0).nonzero()
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert 0.02 * 32 * 32 - 1 <= area <= 32 * 32 / 3 + 1
    assert not torch.equal(erased[0], erased[1])  # new noise in each frame
    assert torch.equal(CubeRandomErasing(p=0.0)(video), video)


def test_repeated_augmentation_gives_two_different_clips_of_the_same_video(tiny_kinetics):
    from mvit_video.data.kinetics import KineticsDataModule

    dm = KineticsDataModule(
        str(tiny_kinetics),
        num_classes=4,
        num_frames=4,
        sampling_rate=2,
        crop_size=32,
        train_jitter_scales=(40, 48),
        batch_size=2,
        num_workers=0,
        num_samples=2,
        rand_augment="rand-m7-n4-mstd0.5-inc1",
        erase_prob=0.25,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, 4, 32, 32)  # 2 videos x 2 samples
    assert batch["video_index"][0] == batch["video_index"][1] and batch["label"][0] == batch["label"][1]
    assert not torch.equal(batch["video"][0], batch["video"][1])
    assert dm.datasets["val"][0]["video"].ndim == 4  # validation clips are single


def test_collate_flattens_samples_next_to_each_other():
    batch = [{"video": torch.full((2, 3, 1, 2, 2), float(i)), "label": i, "video_index": i} for i in range(3)]
    out = collate_clips(batch)
    assert out["video"].shape == (6, 3, 1, 2, 2)
    assert out["label"].tolist() == [0, 0, 1, 1, 2, 2] and out["video"][:, 0, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_inverse_uniform_jitter_favours_small_sides():
    tf = ClipTransform("train", 32, jitter_scales=(256, 320), inverse_uniform_jitter=True, random_resized_crop=False)
    torch.manual_seed(0)
    sizes = torch.tensor([tf.jitter_size() for _ in range(4000)], dtype=torch.float)
    assert sizes.min() >= 256 and sizes.max() <= 320
    # uniform in 1/size: the median is the harmonic middle 2/(1/256+1/320) = 284.4, below the arithmetic 288
    assert 282 < sizes.median() < 287


def test_mixup_targets_sum_to_one():
    mix = MixupCutmix(num_classes=5, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1)
    for _ in range(10):
        video, target = mix(torch.randn(4, 3, 2, 8, 8), torch.tensor([0, 1, 2, 3]))
        assert video.shape == (4, 3, 2, 8, 8)
        assert torch.allclose(target.sum(1), torch.ones(4))
