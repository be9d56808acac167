"""Synthetic plastic-duck line: deterministic camera frames with exact ground truth, datasets and demo frames."""
