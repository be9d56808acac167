"""`python -m hub.model_factory`: build the bundled models, or train one model from a dataset.

  bundled     generate the synthetic duck line, train both models, write models/duck-*/1 (make models)
  classifier  train the OK/KO classifier from a dataset in the standard layout
  detector    train the defect detector from a dataset in the standard (YOLO) layout

Needs the `train` extra (TensorFlow). Reproducible: fixed seeds and deterministic ops.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the real output

TRAIN_SEED = 1
HELDOUT_SEED = 1001  # a different seed: the held-out set shares no rendering with training


def _generate(out: Path, count: int, seed: int) -> Path:
    from hub.duckline.dataset import write_dataset  # noqa: PLC0415

    if out.exists():
        shutil.rmtree(out)
    write_dataset(out, count=count, seed=seed)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub.model_factory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bundled = sub.add_parser("bundled", help="rebuild models/duck-classifier and models/duck-detector")
    bundled.add_argument("--out", type=Path, default=Path("models"))
    bundled.add_argument("--work", type=Path, default=Path("build/model-factory"))
    bundled.add_argument("--train-items", type=int, default=1500, help="items (x2 cameras) to train on")
    bundled.add_argument("--heldout-items", type=int, default=200, help="held-out items (x2 cameras)")
    for name in ("classifier", "detector"):
        one = sub.add_parser(name, help=f"train the {name} from a dataset")
        one.add_argument("--data", type=Path, required=True, help="dataset root (hub.duckline layout)")
        one.add_argument("--heldout", type=Path, required=True, help="held-out dataset root, same layout")
        one.add_argument("--heldout-seed", type=int, default=-1, help="recorded in the model card")
        one.add_argument("--out", type=Path, required=True, help="model version folder to write")
        one.add_argument("--epochs", type=int)
    args = parser.parse_args(argv)

    from hub.duckline.synth import DEFECT_KINDS  # noqa: PLC0415
    from hub.model_factory.train import (  # noqa: PLC0415
        HeldOut,
        classifier_from_detector,
        train_classifier,
        train_detector,
    )

    started = time.perf_counter()
    if args.command == "bundled":
        data = _generate(args.work / "train", args.train_items, TRAIN_SEED)
        heldout = HeldOut(_generate(args.work / "heldout", args.heldout_items, HELDOUT_SEED), HELDOUT_SEED)
        generated = time.perf_counter() - started
        results: dict[str, object] = {"generate_seconds": round(generated, 1)}
        detector = train_detector(data, heldout, args.out / "duck-detector" / "1", list(DEFECT_KINDS))
        results["detector"] = detector.card
        results["classifier"] = classifier_from_detector(
            detector, data, heldout, args.out / "duck-classifier" / "1"
        )
    else:
        heldout = HeldOut(args.heldout, args.heldout_seed)
        extra = {"epochs": args.epochs} if args.epochs else {}
        if args.command == "classifier":
            results = {"classifier": train_classifier(args.data, heldout, args.out, **extra)}
        else:
            results = {
                "detector": train_detector(args.data, heldout, args.out, list(DEFECT_KINDS), **extra).card
            }
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    summary = {
        k: {m: v[m] for m in v if "accuracy" in m or "precision" in m or "recall" in m or "seconds" in m}
        if isinstance(v, dict)
        else v
        for k, v in results.items()
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
