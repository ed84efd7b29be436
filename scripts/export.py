#!/usr/bin/env python
"""Export a trained classifier (checkpoint from train.py) with torch.export (.pt2) or to ONNX (.onnx), and check
that the exported program gives the eager outputs on a random clip of the checkpoint's size.

    python scripts/export.py --ckpt CKPT --out model.pt2
    python scripts/export.py --ckpt CKPT --out model.onnx     # pip install 'mvit_video[export]'
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True, help="*.pt2 (torch.export) or *.onnx")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    import torch  # after the arguments: --help and usage errors answer at once

    from mvit_video.export import example_inputs, export_onnx, export_program, run_onnx
    from mvit_video.inference import CheckpointMetadataError, load
    from mvit_video.models.convert import CheckpointReadError

    try:
        model = load(args.ckpt).model
    except (FileNotFoundError, CheckpointReadError, CheckpointMetadataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    inputs = example_inputs(model, batch=args.batch)
    with torch.no_grad():
        eager = model(*inputs)
        if args.out.endswith(".onnx"):
            exported = run_onnx(export_onnx(model, inputs, args.out), inputs)
        else:
            exported = export_program(model, inputs, args.out).module()(*inputs)
    diff = float((exported - eager).abs().max())
    print(f"wrote {args.out}: input {tuple(inputs[0].shape)}, max |exported - eager| = {diff:.2e}")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
