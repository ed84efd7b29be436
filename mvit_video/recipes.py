"""The official MViTv2 values, in one place: the recipes of SlowFast's configs and the paper's model sizes.

``OFFICIAL`` is what ``scripts/recipe_diff.py`` compares our resolved experiment configs with (config key ->
official value, spec §2.1-2.3); ``PAPER`` is what ``scripts/model_report.py`` and the tests compare our built models
with (parameters and GFLOPs per view, spec §0 and §3); ``PAPER_VIEWS`` each experiment's row in the paper's result
tables (GFLOPs x views, ``model_report.py --experiments``). The large-model recipes only the paper gives (§B.4) are
recipes too; a value neither it nor a config gives is ``UNSOURCED``, and the experiment declares its choice. Configs,
tests and docstrings refer to these tables instead of restating the numbers. Standard library only: the scripts
import it without torch.
"""

from __future__ import annotations

from typing import NamedTuple

RAND_AUG = "rand-m7-n4-mstd0.5-inc1"
KINETICS_MEAN, KINETICS_STD = [0.45] * 3, [0.225] * 3
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
REQUIRED = "<a checkpoint, required>"  # init_from must be set (to anything)

# Values shared by all five official video configs (spec §2.1-2.3).
COMMON = {
    "data.crop_size": 224,
    "data.mean": KINETICS_MEAN,
    "data.std": KINETICS_STD,
    "data.rand_augment": RAND_AUG,
    "data.erase_prob": 0.25,
    "model.head_dropout": 0.5,
    "task.label_smoothing": 0.1,
    "task.mixup.mixup_alpha": 0.8,
    "task.mixup.cutmix_alpha": 1.0,
    "task.mixup.prob": 1.0,
    "task.mixup.switch_prob": 0.5,
    "task.scheduler.end_lr": 1e-6,
    "trainer.precision": "32-true",
}
K400 = {
    **COMMON,
    "data.num_classes": 400,
    "task.optimizer._target_": "torch.optim.AdamW",
    "task.optimizer.lr": 1e-4,
    "task.optimizer.weight_decay": 0.05,
    "task.optimizer.betas": [0.9, 0.999],
    "task.optimizer.eps": 1e-8,
    "task.scheduler.warmup_epochs": 30,
    "task.scheduler.warmup_start_lr": 1e-6,
    "trainer.max_epochs": 200,
    "trainer.gradient_clip_val": 1.0,
    "data.batch_size": 2,
    "data.num_samples": 2,  # 16 per node / 8 GPUs, NUM_SAMPLE 2
    "data.random_resized_crop": True,
    "data.flip": True,
    "data.train_jitter_scales": [256, 320],
    "data.inverse_uniform_jitter": False,
    "data.test_num_clips": 5,
    "data.test_num_crops": 1,
}
SSV2 = {
    **COMMON,
    "task.optimizer._target_": "torch.optim.SGD",
    "task.optimizer.lr": 2.5e-3,
    "task.optimizer.momentum": 0.9,
    "task.optimizer.nesterov": True,
    "task.optimizer.weight_decay": 1e-4,
    "task.scheduler.warmup_epochs": 3,
    "task.scheduler.warmup_start_lr": 1e-4,
    "trainer.max_epochs": 100,
    "trainer.gradient_clip_val": None,
    "data.batch_size": 2,
    "data.num_samples": 1,
    "data.random_resized_crop": False,
    "data.flip": False,
    "data.train_jitter_scales": [256, 320],
    "data.inverse_uniform_jitter": True,
    "data.test_num_clips": 1,
    "data.test_num_crops": 3,
    "data.num_classes": 174,
    "model.drop_path_rate": 0.4,
    "init_from": REQUIRED,
}
S16 = {"model.name": "mvitv2_s_16x4", "data.num_frames": 16, "data.sampling_rate": 4}
B32 = {"model.name": "mvitv2_b_32x3", "data.num_frames": 32, "data.sampling_rate": 3}
L40 = {
    "model.name": "mvitv2_l_40x3",
    "data.num_frames": 40,
    "data.sampling_rate": 3,
    "data.crop_size": 312,
    "data.train_jitter_scales": [356, 446],
    "data.mean": IMAGENET_MEAN,
    "data.std": IMAGENET_STD,
    "model.drop_path_rate": 0.75,
    "task.grad_checkpointing": True,
}
K400_B = {**K400, **B32, "model.drop_path_rate": 0.3}
# The K400-L file is test-only: its architecture, data and test values are official, its training recipe is not.
K400_L_TEST = {k: v for k, v in {**K400, **L40}.items() if k.startswith(("data.", "model.", "task.grad"))}
K400_L_TEST.update({"data.test_num_crops": 3, "task.mixup.prob": 0.0, "data.batch_size": 1})
K400_L_TEST.pop("data.num_samples")  # AUG.NUM_SAMPLE of L is not in the repo

# The paper's MViTv2-L recipes (arXiv 2112.01526v2 §B.4, Tables 10-13; spec §8.2): no official config ships them.
# §B.4: the from-scratch K400 recipe (the configs above), with these changes. From IN-21K (§4.3 init): 75 epochs at
# 16x4, 224^2, base lr 1.6e-4 per 512 clips. The 40x3 models start from their 16x4 counterparts: 30 epochs, lr
# 1.6e-5 per 128 clips, weight decay 1e-8, no mixup. K600 and K700: "all hyper-parameters are identical to K400".
# Learning rates become per-node values, x trainer.num_nodes, as the configs' BASE_LR_SCALE_NUM_SHARDS does: a node
# is 8 GPUs of data.batch_size videos x data.num_samples clips (§B.4: 4 clips per GPU, 2 repeated augmentations).
UNSOURCED = "<in neither the paper nor a config>"  # the experiment states its choice in recipe_deviations
L16_CLIPS_PER_NODE = 8 * 2 * 2  # 8 GPUs x 2 videos x 2 clips (§B.4)
L40_CLIPS_PER_NODE = 8 * 1 * 2  # 8 GPUs x 1 video (TRAIN.BATCH_SIZE 8 per node of the L configs) x 2 clips
# What the paper leaves open for these shorter schedules: the warm-up and where the half-period cosine ends. The
# experiments keep the K400 configs' proportions (warm-up 30 of 200 epochs; WARMUP_START_LR and COSINE_END_LR at
# 1/100 of BASE_LR) and declare them in their recipe_deviations.
L_SCHEDULE_UNSOURCED = dict.fromkeys(
    ("task.scheduler.warmup_epochs", "task.scheduler.warmup_start_lr", "task.scheduler.end_lr"), UNSOURCED
)
K400_L_IN21K_16 = {
    **K400,
    **{k: v for k, v in L40.items() if not k.startswith("data.")},  # the L architecture, drop path 0.75
    "data.num_frames": 16,
    "data.sampling_rate": 4,
    "data.mean": IMAGENET_MEAN,  # the L configs' DATA.MEAN/STD (an ImageNet-trained init)
    "data.std": IMAGENET_STD,
    "task.optimizer.lr": 1.6e-4 * L16_CLIPS_PER_NODE / 512,
    "trainer.max_epochs": 75,
    "init_from": REQUIRED,  # MViTv2_L_in21k.pyth (facebookresearch/mvit), the layout of mvitv2_l_40x3 (spec §8.1)
    "init_mode": "center",  # §4.3
    **L_SCHEDULE_UNSOURCED,
}
K400_L_IN21K_40 = {
    **K400_L_IN21K_16,
    **L40,
    "data.batch_size": 1,
    "data.test_num_crops": 3,  # Table 10: 2828 GFLOPs x 3 crops x 5 clips (the K400-L test config's views)
    "task.optimizer.lr": 1.6e-5 * L40_CLIPS_PER_NODE / 128,
    "task.optimizer.weight_decay": 1e-8,
    "task.mixup.prob": 0.0,
    "trainer.max_epochs": 30,
    "init_mode": None,  # init_from: the 16x4 model (a video checkpoint, loaded as it is)
}

# The paper's AVA recipe (arXiv 2112.01526v2 §B.6, Table A.2; spec §8.3): no official config ships it. Synchronous SGD,
# 64 GPUs x 8 clips, base lr 0.6 (linear scaling: 0.6 per 512 clips, here per node of 8 GPUs x data.batch_size clips,
# x trainer.num_nodes), half-period cosine, 30 epochs, 5 warm-up epochs, weight decay 1e-8, drop path 0.4. Boxes:
# test proposals with detector confidence > 0.8; training: ground truth + proposals with IoU > 0.9 to a ground-truth
# box (conf/data/ava.yaml: the fourth value of a training box file, the third of a validation one).
AVA_CLIPS_PER_NODE = 8 * 8  # 8 GPUs x 8 clips (§B.6)
AVA = {
    "data.num_classes": 80,  # AVA's action ids (MODEL.NUM_CLASSES); the label map's 60 are evaluated
    "data.batch_size": 8,
    "data.train_boxes.1.3": 0.9,  # an IoU with a ground-truth box, not a score
    "data.val_boxes.0.2": 0.8,
    "task.optimizer._target_": "torch.optim.SGD",
    "task.optimizer.lr": 0.6 * AVA_CLIPS_PER_NODE / 512,
    "task.optimizer.momentum": UNSOURCED,
    "task.optimizer.nesterov": UNSOURCED,
    "task.optimizer.weight_decay": 1e-8,
    "task.scheduler._target_": "mvit_video.tasks.warmup_cosine",
    "task.scheduler.warmup_epochs": 5,
    "task.scheduler.warmup_start_lr": UNSOURCED,
    "task.scheduler.end_lr": UNSOURCED,
    "trainer.max_epochs": 30,
    "model.backbone.drop_path_rate": 0.4,
    "init_from": REQUIRED,  # Table A.2: each row names its Kinetics (or IN-21K + K700) checkpoint
}
AVA_MODELS = {
    "s": {"model.backbone.name": "mvitv2_s_16x4", "data.num_frames": 16, "data.sampling_rate": 4, "data.crop_size": 224},
    "b": {"model.backbone.name": "mvitv2_b_32x3", "data.num_frames": 32, "data.sampling_rate": 3, "data.crop_size": 224},
    "l": {
        "model.backbone.name": "mvitv2_l_40x3",  # the IN-21K L layout (attention widening), as its K700 init
        "data.num_frames": 40,
        "data.sampling_rate": 3,
        "data.crop_size": 312,  # Table A.2: L at 312
        "data.jitter_scales": UNSOURCED,
        "data.mean": IMAGENET_MEAN,  # the L configs' DATA.MEAN/STD: its init was trained with them
        "data.std": IMAGENET_STD,
    },
}
# Table A.2 (mAP): centre crop, full resolution; by experiment and init.
AVA_PAPER_MAP = {
    ("ava_mvitv2_s", "K400"): (26.8, 27.6),
    ("ava_mvitv2_b", "K400"): (28.1, 29.0),
    ("ava_mvitv2_b", "K600"): (29.9, 30.5),
    ("ava_mvitv2_b", "K700"): (31.3, 32.3),
    ("ava_mvitv2_l", "IN-21K + K700"): (33.5, 34.4),
}


class Recipe(NamedTuple):
    source: str  # the official config (or why there is none)
    values: dict  # config key -> official value
    trains_like: str | None = None  # for a test-only config: the recipe whose training values the experiment uses


OFFICIAL: dict[str, Recipe] = {
    "k400_mvitv2_s": Recipe("configs/Kinetics/MVITv2_S_16x4.yaml", {**K400, **S16, "model.drop_path_rate": 0.2}),
    "k400_mvitv2_b": Recipe("configs/Kinetics/MVITv2_B_32x3.yaml", K400_B),
    "k400_mvitv2_l": Recipe("configs/Kinetics/MVITv2_L_40x3_test.yaml (test-only)", K400_L_TEST, "k400_mvitv2_b"),
    "k400_mvitv2_l_in21k_stage1": Recipe("paper §B.4 (IN-21K init, 16x4 at 224)", K400_L_IN21K_16),
    "k400_mvitv2_l_in21k_stage2": Recipe("paper §B.4 (40x3 from 16x4), Table 10 (312^2, 3x5 views)", K400_L_IN21K_40),
    "k600_mvitv2_l": Recipe(
        "paper §B.4 (K600 = K400 values), Table 11 (352^2, 3 crops x 4 clips)",
        {
            **K400_L_IN21K_40,
            "data.num_classes": 600,
            "data.crop_size": 352,  # the row's input (test: its 3790 GFLOPs/view); train: as the L configs, the same
            "data.train_jitter_scales": UNSOURCED,  # [356, 446] is the L configs' range for 312
            "data.test_num_clips": 4,
        },
    ),
    "k700_mvitv2_l": Recipe(
        "paper §B.4 (K700 = K400 values), Table 12 (312^2, 3 crops x 3 clips)",
        {**K400_L_IN21K_40, "data.num_classes": 700, "data.test_num_clips": 3},
    ),
    "k600_mvitv2_b": Recipe("no K600 config; the K400-B recipe (spec §2)", {**K400_B, "data.num_classes": 600}),
    "k700_mvitv2_b": Recipe("no K700 config; the K400-B recipe (spec §2)", {**K400_B, "data.num_classes": 700}),
    "ssv2_mvitv2_s": Recipe("configs/SSv2/MVITv2_S_16x4.yaml", {**SSV2, **S16}),
    "ssv2_mvitv2_b": Recipe("configs/SSv2/MVITv2_B_32x3.yaml", {**SSV2, **B32, "task.optimizer.lr": 1.5e-3}),
    "ssv2_mvitv2_l": Recipe(
        "configs/SSv2/MVITv2_L_40x3.yaml; init IN-21K + K400 (paper Table 13): k400_mvitv2_l_in21k_stage2's model",
        {
            **SSV2,
            **L40,
            "task.optimizer.lr": 1.25e-3,
            "task.scheduler.warmup_start_lr": 1e-6,
            "trainer.max_epochs": 40,
            "trainer.gradient_clip_val": 2.0,
            "data.batch_size": 1,
            "task.mixup.prob": 0.0,
        },
    ),
}
OFFICIAL.update(
    {
        f"ava_mvitv2_{v}": Recipe("paper §B.6, Table A.2 (no official MViT AVA config)", {**AVA, **AVA_MODELS[v]})
        for v in ("s", "b", "l")
    }
)
# The official image recipe: facebookresearch/mvit mvit/config/defaults.py, of which configs/MVITv2_{T,S,B}.yaml
# change only the architecture and MVIT.DROPPATH_RATE (their SOLVER values are the defaults'). 8 GPUs per node.
IN1K = {
    "data.num_classes": 1000,  # MODEL.NUM_CLASSES
    "data.num_frames": 1,
    "data.crop_size": 224,  # DATA.TRAIN_CROP_SIZE, DATA.TEST_CROP_SIZE
    "data.val_crop_ratio": 0.875,  # DATA.VAL_CROP_RATIO
    "data.interpolation": "bicubic",  # AUG.INTERPOLATION
    "data.flip": True,  # transforms_imagenet_train(hflip=0.5)
    "data.mean": IMAGENET_MEAN,
    "data.std": IMAGENET_STD,
    "data.rand_augment": "rand-m9-n6-mstd0.5-inc1",  # AUG.AA_TYPE
    "data.erase_prob": 0.25,  # AUG.RE_PROB
    "data.batch_size": 32,  # TRAIN.BATCH_SIZE 256 / NUM_GPUS 8
    "data.test_batch_size": 8,  # TEST.BATCH_SIZE 64 / NUM_GPUS 8
    "model.head_dropout": 0.0,  # MODEL.DROPOUT_RATE
    "task.label_smoothing": 0.1,  # MIXUP.LABEL_SMOOTH_VALUE
    "task.mixup.mixup_alpha": 0.8,
    "task.mixup.cutmix_alpha": 1.0,
    "task.mixup.prob": 1.0,
    "task.mixup.switch_prob": 0.5,
    "task.layer_decay": 1.0,  # SOLVER.LAYER_DECAY
    "task.optimizer._target_": "torch.optim.AdamW",  # SOLVER.OPTIMIZING_METHOD
    "task.optimizer.lr": 2.5e-4,  # SOLVER.BASE_LR (x NUM_SHARDS)
    "task.optimizer.weight_decay": 0.05,
    "task.optimizer.betas": [0.9, 0.999],  # torch's default (mvit/models/optimizer.py sets only eps)
    "task.optimizer.eps": 1e-8,
    "task.scheduler.warmup_epochs": 70,  # SOLVER.WARMUP_EPOCHS
    "task.scheduler.warmup_start_lr": 1e-8,  # SOLVER.WARMUP_START_LR
    "task.scheduler.end_lr": 1e-6,  # SOLVER.COSINE_END_LR
    "trainer.max_epochs": 300,  # SOLVER.MAX_EPOCH
    "trainer.gradient_clip_val": 1.0,  # SOLVER.CLIP_GRAD_L2NORM
    "trainer.precision": "32-true",  # TRAIN.MIXED_PRECISION False
}
OFFICIAL.update(
    {
        f"in1k_mvitv2_{v}": Recipe(
            f"mvit configs/MVITv2_{v.upper()}.yaml", {**IN1K, "model.name": f"mvitv2_{v}", "model.drop_path_rate": dp}
        )
        for v, dp in (("t", 0.1), ("s", 0.1), ("b", 0.3))  # MVIT.DROPPATH_RATE
    }
)
NOT_RECIPES = {
    "demo": "the CPU demo, tuned for 2 cores (not a paper recipe)",
    "ssv2_synthetic": "synthetic SSv2 on CPU, tuned like the demo",
    "ava_synthetic": "synthetic AVA on CPU",
    # Other engineers' experiments (issues 18-20), with their sources in their files:
    "ucf101_mvitv2_s": "no MViTv2 UCF101 recipe exists (paper, configs); its UNSOURCED choices are in the file",
    "hmdb51_mvitv2_s": "no MViTv2 HMDB51 recipe exists (paper, configs); its UNSOURCED choices are in the file",
    "charades_mvitv2_s": "no MViTv2 Charades recipe exists (MViTv1 reports one, no config); SlowFast Charades data/test",
    "finetune": "fine-tuning on the user's own videos: VideoMAE's small-benchmark recipe, sourced in the file",
}
LR_KEYS = ("task.optimizer.lr", "task.scheduler.warmup_start_lr", "task.scheduler.end_lr")


def expected(name: str) -> dict:
    """The values an experiment must have: its official ones, over those of the recipe it trains like (if any)."""
    recipe = OFFICIAL[name]
    base = OFFICIAL[recipe.trains_like].values if recipe.trains_like else {}
    return {**base, **recipe.values}


class PaperModel(NamedTuple):
    preset: str
    num_classes: int
    input_shape: tuple[int, ...]  # one view, (1, C, T, H, W) or (1, C, H, W)
    params: int | float  # int: the exact count of the official checkpoint; float: millions, as the paper prints them
    gflops: float  # per view, one multiply-add = one FLOP (fvcore's convention)


# Sources: spec §0 (video: the official checkpoints' counts) and §3 (image models: the paper's table), timm (below).
PAPER: tuple[PaperModel, ...] = (
    PaperModel("mvitv2_s_16x4", 400, (1, 3, 16, 224, 224), 34_537_744, 64.5),
    PaperModel("mvitv2_b_32x3", 400, (1, 3, 32, 224, 224), 51_230_128, 225.2),
    PaperModel("mvitv2_l_40x3", 400, (1, 3, 40, 312, 312), 213_390_112, 2828.1),
    PaperModel("mvitv2_s_16x4", 174, (1, 3, 16, 224, 224), 34_363_950, 64.5),
    PaperModel("mvitv2_b_32x3", 174, (1, 3, 32, 224, 224), 51_056_334, 225.2),
    PaperModel("mvitv2_l_40x3", 174, (1, 3, 40, 312, 312), 213_129_534, 2828.1),
    PaperModel("mvitv2_t", 1000, (1, 3, 224, 224), 24.17, 4.70),
    PaperModel("mvitv2_s", 1000, (1, 3, 224, 224), 34.87, 7.00),
    PaperModel("mvitv2_b", 1000, (1, 3, 224, 224), 51.47, 10.16),
    PaperModel("mvitv2_l", 1000, (1, 3, 224, 224), 217.99, 43.87),
    # Class-token image models: exact counts of timm 1.0's mvitv2_{small,base,large,huge}_cls (whose B/L/H load the
    # official MViTv2_{B,L,H}_in21k.pyth, 19168 classes); GFLOPs: the timm model cards' GMACs (S: the paper's S).
    PaperModel("mvitv2_s_cls", 1000, (1, 3, 224, 224), 34_870_312, 7.0),
    PaperModel("mvitv2_b_cls", 19168, (1, 3, 224, 224), 65_444_032, 10.2),
    PaperModel("mvitv2_l_cls", 19168, (1, 3, 224, 224), 234_583_216, 42.2),
    PaperModel("mvitv2_h_cls", 19168, (1, 3, 224, 224), 694_804_128, 120.7),
)


class PaperViews(NamedTuple):
    """An experiment's row in the paper: GFLOPs per view x spatial crops x temporal clips, as printed."""

    gflops: float
    crops: int
    clips: int
    source: str
    note: str = ""  # why our model's GFLOPs differ from the printed ones, where they do


_B_206 = "Tables 11-12 print 206 for the B 32x3 that Table 10 and the K400 checkpoint give 225.2 (a paper inconsistency)"
# Tables 10-13 of arXiv 2112.01526v2 (views printed as crops x clips); ``scripts/model_report.py --experiments``.
PAPER_VIEWS: dict[str, PaperViews] = {
    "k400_mvitv2_s": PaperViews(64, 1, 5, "Table 10"),
    "k400_mvitv2_b": PaperViews(225, 1, 5, "Table 10"),
    "k400_mvitv2_l": PaperViews(2828, 3, 5, "Table 10"),
    "k400_mvitv2_l_in21k_stage2": PaperViews(2828, 3, 5, "Table 10"),
    "k600_mvitv2_b": PaperViews(206, 1, 5, "Table 11", _B_206),
    "k600_mvitv2_l": PaperViews(3790, 3, 4, "Table 11"),
    "k700_mvitv2_b": PaperViews(206, 3, 3, "Table 12", _B_206),
    "k700_mvitv2_l": PaperViews(2828, 3, 3, "Table 12"),
    "ssv2_mvitv2_s": PaperViews(64.5, 3, 1, "Table 13"),
    "ssv2_mvitv2_b": PaperViews(225, 3, 1, "Table 13"),
    "ssv2_mvitv2_l": PaperViews(2828, 3, 1, "Table 13"),
    "in1k_mvitv2_t": PaperViews(4.7, 1, 1, "Table A.3"),
    "in1k_mvitv2_s": PaperViews(7.0, 1, 1, "Table A.3"),
    "in1k_mvitv2_b": PaperViews(10.2, 1, 1, "Table A.3"),
}


def params_match(count: int, paper: int | float) -> bool:
    """Exact for a checkpoint's count; to the paper's two decimals (in millions) for a printed one."""
    return count == paper if isinstance(paper, int) else round(count / 1e6, 2) == paper
