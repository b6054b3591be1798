# SPDX-License-Identifier: Apache-2.0
"""``python -m monai_cover.nnunet check WEIGHTS PLANS CONFIGURATION [--dataset_json FILE]``: whether nnU-Net's
``-pretrained_weights`` will load a weights file into the network of a plan, in words. Exit 0: compatible; 1: not
compatible (the first differing keys and shapes are listed); 2: a file that cannot be read.

``python -m monai_cover.nnunet demo-dataset RAW_FOLDER [--cases N]``: write a tiny labelled dataset in nnU-Net's raw
layout (``Dataset501_Tiny``) to try the hand-off with."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_cover.nnunet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a weights file against the network an nnU-Net plan builds")
    check.add_argument("weights", help="the weights file (e.g. nnunet_pretrained.pth)")
    check.add_argument("plans", help="nnU-Net's plans JSON, or the preprocessed dataset folder holding it")
    check.add_argument("configuration", help="the configuration, e.g. 3d_fullres or 2d")
    check.add_argument("--dataset_json", default=None, help="dataset.json (default: the one beside the plans)")
    demo = sub.add_parser("demo-dataset", help="write a tiny labelled dataset in nnU-Net's raw layout")
    demo.add_argument("raw_folder", help="the nnUNet_raw folder to write Dataset501_Tiny into")
    demo.add_argument("--cases", type=int, default=5)
    args = parser.parse_args(argv)

    if args.command == "demo-dataset":
        from .demo import write_demo_dataset

        try:
            print(write_demo_dataset(args.raw_folder, cases=args.cases))
        except FileExistsError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            return 2
        return 0

    from .plans import NnUNetPlanError
    from .weights import check_nnunet_weights

    try:
        result = check_nnunet_weights(args.weights, args.plans, args.configuration, args.dataset_json)
    except (ValueError, NnUNetPlanError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    print(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
