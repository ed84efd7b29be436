#!/usr/bin/env python
"""Our resolved experiment configs next to the official MViTv2 recipes (shared/MVITV2_SPEC.md §2.1-2.3).

For every experiment with an official counterpart, prints each recipe value (ours | official | verdict) and
exits non-zero on any difference that the experiment file does not declare under ``recipe_deviations`` with its
reason; a declared deviation that is no longer a difference is an error too. It also checks that the learning
rates scale with the number of nodes, as SlowFast's BASE_LR_SCALE_NUM_SHARDS does.

    python scripts/recipe_diff.py [EXPERIMENT ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
RAND_AUG = "rand-m7-n4-mstd0.5-inc1"
KINETICS_MEAN, KINETICS_STD = [0.45] * 3, [0.225] * 3
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
REQUIRED = "<a checkpoint, required>"  # init_from must be set (to anything)

# Values shared by all five official video configs (spec §2.1-2.3).
COMMON = {
    "data.crop_size": 224, "data.mean": KINETICS_MEAN, "data.std": KINETICS_STD,
    "data.rand_augment": RAND_AUG, "data.erase_prob": 0.25,
    "model.head_dropout": 0.5, "task.label_smoothing": 0.1,
    "task.mixup.mixup_alpha": 0.8, "task.mixup.cutmix_alpha": 1.0, "task.mixup.prob": 1.0, "task.mixup.switch_prob": 0.5,
    "task.scheduler.end_lr": 1e-6, "trainer.precision": "32-true",
}  # fmt: skip
K400 = {
    **COMMON,
    "task.optimizer._target_": "torch.optim.AdamW", "task.optimizer.lr": 1e-4, "task.optimizer.weight_decay": 0.05,
    "task.optimizer.betas": [0.9, 0.999], "task.optimizer.eps": 1e-8,
    "task.scheduler.warmup_epochs": 30, "task.scheduler.warmup_start_lr": 1e-6,
    "trainer.max_epochs": 200, "trainer.gradient_clip_val": 1.0,
    "data.batch_size": 2, "data.num_samples": 2,  # 16 per node / 8 GPUs, NUM_SAMPLE 2
    "data.random_resized_crop": True, "data.flip": True, "data.train_jitter_scales": [256, 320],
    "data.inverse_uniform_jitter": False, "data.test_num_clips": 5, "data.test_num_crops": 1,
}  # fmt: skip
SSV2 = {
    **COMMON,
    "task.optimizer._target_": "torch.optim.SGD", "task.optimizer.lr": 2.5e-3, "task.optimizer.momentum": 0.9,
    "task.optimizer.nesterov": True, "task.optimizer.weight_decay": 1e-4,
    "task.scheduler.warmup_epochs": 3, "task.scheduler.warmup_start_lr": 1e-4,
    "trainer.max_epochs": 100, "trainer.gradient_clip_val": None,
    "data.batch_size": 2, "data.num_samples": 1,
    "data.random_resized_crop": False, "data.flip": False, "data.train_jitter_scales": [256, 320],
    "data.inverse_uniform_jitter": True, "data.test_num_clips": 1, "data.test_num_crops": 3,
    "data.num_classes": 174, "model.drop_path_rate": 0.4, "init_from": REQUIRED,
}  # fmt: skip
S16 = {"model.name": "mvitv2_s_16x4", "data.num_frames": 16, "data.sampling_rate": 4}
B32 = {"model.name": "mvitv2_b_32x3", "data.num_frames": 32, "data.sampling_rate": 3}
L40 = {
    "model.name": "mvitv2_l_40x3", "data.num_frames": 40, "data.sampling_rate": 3, "data.crop_size": 312,
    "data.train_jitter_scales": [356, 446], "data.mean": IMAGENET_MEAN, "data.std": IMAGENET_STD,
    "model.drop_path_rate": 0.75, "task.grad_checkpointing": True,
}  # fmt: skip
# The K400-L file is test-only: its architecture, data and test values are official, its training recipe is not.
K400_L_TEST = {k: v for k, v in {**K400, **L40}.items() if k.startswith(("data.", "model.", "task.grad"))}
K400_L_TEST.update({"data.test_num_crops": 3, "task.mixup.prob": 0.0, "data.batch_size": 1})
K400_L_TEST.pop("data.num_samples")  # AUG.NUM_SAMPLE of L is not in the repo

OFFICIAL: dict[str, tuple[str, dict]] = {
    "k400_mvitv2_s": ("configs/Kinetics/MVITv2_S_16x4.yaml", {**K400, **S16, "model.drop_path_rate": 0.2}),
    "k400_mvitv2_b": ("configs/Kinetics/MVITv2_B_32x3.yaml", {**K400, **B32, "model.drop_path_rate": 0.3}),
    "k400_mvitv2_l": ("configs/Kinetics/MVITv2_L_40x3_test.yaml (test-only)", K400_L_TEST),
    "k600_mvitv2_b": ("no K600 config; the K400-B recipe (spec §2)", {**K400, **B32, "model.drop_path_rate": 0.3}),
    "k700_mvitv2_b": ("no K700 config; the K400-B recipe (spec §2)", {**K400, **B32, "model.drop_path_rate": 0.3}),
    "ssv2_mvitv2_s": ("configs/SSv2/MVITv2_S_16x4.yaml", {**SSV2, **S16}),
    "ssv2_mvitv2_b": ("configs/SSv2/MVITv2_B_32x3.yaml", {**SSV2, **B32, "task.optimizer.lr": 1.5e-3}),
    "ssv2_mvitv2_l": (
        "configs/SSv2/MVITv2_L_40x3.yaml",
        {
            **SSV2, **L40, "task.optimizer.lr": 1.25e-3, "task.scheduler.warmup_start_lr": 1e-6,
            "trainer.max_epochs": 40, "trainer.gradient_clip_val": 2.0, "data.batch_size": 1, "task.mixup.prob": 0.0,
        },
    ),  # fmt: skip
}
NOT_RECIPES = {
    "demo": "the CPU demo, tuned for 2 cores (not a paper recipe)",
    "ssv2_synthetic": "synthetic SSv2 on CPU, tuned like the demo",
    "ava_synthetic": "synthetic AVA on CPU",
    "ava_mvitv2_s": "no official MViT AVA config exists (spec §2, §4.4); sources are in the file",
    "ava_mvitv2_b": "no official MViT AVA config exists (spec §2, §4.4); sources are in the file",
}
LR_KEYS = ("task.optimizer.lr", "task.scheduler.warmup_start_lr", "task.scheduler.end_lr")


def compose_experiment(name: str, extra: list[str] | None = None):
    from mvit_video.train import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", "paths.output_dir=.", *(extra or [])])


def _same(ours, official) -> bool:
    if official == REQUIRED:
        return ours is not None
    if isinstance(official, float) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
        return abs(ours - official) <= 1e-12 * max(1.0, abs(official))
    return ours == official


def check(name: str, overrides: list[str] | None = None) -> list[str]:
    """Print the comparison of one experiment (with optional Hydra overrides); return its errors."""
    source, official = OFFICIAL[name]
    cfg = compose_experiment(name, overrides)
    declared = cfg.get("recipe_deviations")
    deviations = OmegaConf.to_container(declared, resolve=True) if declared is not None else {}
    errors = []
    print(f"\n== {name}  (official: {source})")
    print(f"   {'key':34s} {'ours':>28s} {'official':>28s}  verdict")
    for key, want in official.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got, resolve=True) if OmegaConf.is_config(got) else got
        same = _same(got, want)
        if same:
            verdict = "ok"
        elif key in deviations:
            verdict = f"intended: {deviations[key]}"
        else:
            verdict = "DIFFERENT (not declared in recipe_deviations)"
            errors.append(f"{name}: {key} = {got!r}, official {want!r}")
        print(f"   {key:34s} {str(got):>28s} {str(want):>28s}  {verdict}")
    for key in deviations:
        if key not in official:
            errors.append(f"{name}: recipe_deviations.{key} names no official value")
        elif _same(OmegaConf.select(cfg, key), official[key]):
            errors.append(f"{name}: recipe_deviations.{key} is declared but the value is the official one")
    scaled = compose_experiment(name, [*(overrides or []), "trainer.num_nodes=4"])
    for key in LR_KEYS:
        one, four = OmegaConf.select(cfg, key), OmegaConf.select(scaled, key)
        if key in official and not _same(four, 4 * one):
            errors.append(f"{name}: {key} does not scale with trainer.num_nodes ({one} at 1 node, {four} at 4)")
    print(f"   learning rates x nodes: {'ok' if not any('scale' in e for e in errors) else 'NOT SCALED'}")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="default: every experiment in conf/experiment")
    args = parser.parse_args()
    names = args.experiments or sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    errors = []
    for name in names:
        if name in OFFICIAL:
            errors += check(name)
        elif name in NOT_RECIPES:
            print(f"\n== {name}: skipped, {NOT_RECIPES[name]}")
        else:
            errors.append(f"{name}: not known to recipe_diff.py; add its official values or a reason to skip it")
    print()
    for e in errors:
        print(f"ERROR {e}")
    print(f"{len(names)} experiments, {len(errors)} unexplained differences")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
