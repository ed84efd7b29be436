#!/usr/bin/env python
"""AVA frame-mAP@0.5IoU with the official evaluator's flags; prints one JSON line: mAP and per-class AP, equal to the
official ActivityNet evaluator's (``get_ava_performance.py``) to the last bit, ties included (4-decimal scores tie
often; their order follows the official reader's heap and numpy's argsort, see ``mvit_video.metrics.ava_frame_map``).

Classes of the label map without ground truth get AP null and are listed in "classes_without_groundtruth"; as in
the official evaluator, they are left out of the mean. A malformed file is named with its line; exit status 2.

    python scripts/ava_eval.py -l ava_action_list_v2.2_for_activitynet_2019.pbtxt \
        -g ava_val_v2.2.csv -d detections.csv -e ava_val_excluded_timestamps_v2.2.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from mvit_video.metrics.ava_frame_map import AVAFormatError, evaluate_files  # numpy only: --help starts fast


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-l", "--labelmap", required=True, help="label-map pbtxt (the evaluated classes)")
    parser.add_argument("-g", "--groundtruth", required=True, help="ground-truth CSV")
    parser.add_argument("-d", "--detections", required=True, help="detections CSV (video,sec,x1,y1,x2,y2,action,score)")
    parser.add_argument("-e", "--exclusions", default=None, help="excluded timestamps CSV (video,sec)")
    parser.add_argument(
        "--chance",
        type=int,
        default=0,
        metavar="N",
        help="also report the mean mAP of N runs with the detection scores shuffled (chance level of these boxes)",
    )
    args = parser.parse_args(argv)
    start = time.time()
    try:
        result = evaluate_files(args.labelmap, args.groundtruth, args.detections, args.exclusions, chance=args.chance)
    except (AVAFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["seconds"] = round(time.time() - start, 3)
    print(json.dumps(result, allow_nan=False))  # strict JSON: no NaN (classes without ground truth are null)
    return 0


if __name__ == "__main__":
    sys.exit(main())
