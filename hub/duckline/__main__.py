"""`python -m hub.duckline`: generate a dataset, demo frames for the replay camera, or a contact sheet.

dataset  --out DIR --count N --seed S [--ko-fraction F]   classification + YOLO detection + truth.jsonl
demo     --out DIR --count N --seed S                     top/NNNN.jpg, side/NNNN.jpg, truth.jsonl
sheet    --out FILE.png --seed S --count N                 frames with their ground truth, for humans
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hub.duckline.dataset import write_dataset, write_demo_frames
from hub.duckline.sheet import write_sheet


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(
        prog="python -m hub.duckline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dataset = sub.add_parser("dataset", help="training dataset (count items x 2 cameras)")
    dataset.add_argument(
        "--ko-fraction", type=float, default=0.5, help="share of defective items (default 0.5)"
    )
    demo = sub.add_parser("demo", help="demo frames for the replay camera (about 70 %% OK)")
    sheet = sub.add_parser("sheet", help="contact sheet PNG cycling through OK and every defect kind")
    sheet.add_argument("--columns", type=int, default=2, help="items per row")
    for command in (dataset, demo, sheet):
        command.add_argument("--out", type=Path, required=True)
        command.add_argument("--count", type=int, required=True)
        command.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    if args.count < 1 or args.seed < 0:
        parser.error("--count must be at least 1 and --seed non-negative")

    started = time.perf_counter()
    if args.command == "dataset":
        counts = write_dataset(args.out, args.count, args.seed, args.ko_fraction)
        print(json.dumps(counts))
    elif args.command == "demo":
        write_demo_frames(args.out, args.count, args.seed)
    else:
        write_sheet(args.out, args.seed, args.count, args.columns)
    print(f"{args.command}: {args.count} items in {time.perf_counter() - started:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
