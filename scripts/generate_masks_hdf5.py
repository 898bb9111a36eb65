"""Pre-generate depth-based foreground masks of a dataset into a separate HDF5 file (the release's
scripts/generate_masks_hdf5.py, reference README "Generating Foreground Masks"; docs/MASKS.md):

    python scripts/generate_masks_hdf5.py --input data/example-data.hdf5 --output data/example-data-masks.hdf5 \\
        --encoder vits --percentile 50 [--mask-kernel 5 5] [--mask-sigma 1.0] [--threshold-alpha 0.1] \\
        [--device cpu] [--batch-size 64] [--model-path DIR] [--true-masks TRUE.hdf5] [--overwrite]

Each trajectory group gets `masks` uint8 [T, H, W] (gzip), then the attribute `complete`; the root attributes say how
(`source_file`, `method` "depth", the parameters). A rerun skips the complete groups and redoes a cut one; an output
complete, or made with other parameters, is refused unless --overwrite. --true-masks scores the depth masks against
true masks (collect_data.py --record_masks=True): IoU per trajectory, pooled over all pixels, and that of the best
horizon baseline (everything below one row is foreground, the row chosen on the true masks: an upper bound).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/generate_masks_hdf5.py`: make `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from src.errors import DatasetError, MissingKeyError, check_hdf5_file, cli  # noqa: E402
from src.masks import DEPTH_MODEL_IDS, depth_masks, depth_of_frames, kernel_pair, load_depth_model  # noqa: E402

COMPLETE_ATTR = "complete"


def trajectory_keys(f: h5py.File) -> list[str]:
    """The trajectory groups "0", "1", ... of a dataset, in numeric order."""
    return sorted((k for k in f.keys() if k.isdigit() and isinstance(f[k], h5py.Group)), key=int)


def depth_parser(doc: str, output: str, percentile: float) -> argparse.ArgumentParser:
    """--input, --output and the depth-mask options, shared with scripts/blur_hdf5_data.py."""
    raw = argparse.RawTextHelpFormatter  # the description's line breaks kept
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=raw)
    parser.add_argument("--input", required=True, help="dataset HDF5 file")
    parser.add_argument("--output", required=True, help=f"{output} HDF5 file to write")
    parser.add_argument("--encoder", default="vits", choices=sorted(DEPTH_MODEL_IDS), help="DepthAnything V2 size")
    parser.add_argument("--percentile", type=float, default=percentile, help="per-frame depth percentile threshold")
    parser.add_argument("--mask-kernel", type=int, nargs=2, default=[5, 5], help="mask feathering kernel (odd)")
    parser.add_argument("--mask-sigma", type=float, default=1.0, help="mask feathering Gaussian sigma")
    alpha = "EMA weight of each frame's own threshold (1 = none)"
    parser.add_argument("--threshold-alpha", type=float, default=0.1, help=alpha)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model-path", default=None, help="local DepthAnything V2 folder (else the HF cache)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def check_depth_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        kernel_pair(args.mask_kernel, "--mask-kernel")
    except ValueError as e:
        parser.error(str(e))
    if args.mask_sigma <= 0:
        parser.error(f"--mask-sigma must be positive, got {args.mask_sigma}")
    if not 0 < args.threshold_alpha <= 1:
        parser.error(f"--threshold-alpha must be in (0, 1], got {args.threshold_alpha}")
    if not 0 <= args.percentile <= 100:
        parser.error(f"--percentile must be in [0, 100], got {args.percentile}")
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")


def depth_params(args: argparse.Namespace) -> dict:
    """Root attributes recording how depth masks were made."""
    out = dict(method="depth", encoder=args.encoder, model_id=DEPTH_MODEL_IDS[args.encoder])
    out |= dict(percentile=float(args.percentile), threshold_alpha=float(args.threshold_alpha))
    return out | dict(mask_kernel=np.asarray(args.mask_kernel, dtype=np.int64), mask_sigma=float(args.mask_sigma))


def trajectory_depth_masks(model, obs: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """Depth masks uint8 [T, H, W] of one trajectory's frames uint8 [T, H, W, 3]."""
    depth = depth_of_frames(model, obs, args.device, args.batch_size)
    return depth_masks(depth, args.percentile, args.threshold_alpha, tuple(args.mask_kernel), args.mask_sigma)


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "OSU" or b.dtype.kind in "OSU":
        return str(a.item() if a.size == 1 else a.tolist()) == str(b.item() if b.size == 1 else b.tolist())
    return a.shape == b.shape and np.allclose(a, b)


def score_against_true(masks_path: Path, true_path: Path) -> dict:
    """IoU of the masks in masks_path against true masks: per trajectory, pooled overall, and the horizon baseline."""
    per_traj, inter, union = {}, 0, 0
    row_fg, total_frames, hw = None, 0, None
    with h5py.File(masks_path, "r") as fm, h5py.File(true_path, "r") as ft:
        for k in trajectory_keys(fm):
            if k not in ft or "masks" not in ft[k]:
                raise MissingKeyError(f"{true_path}: no true masks for trajectory group '{k}'")
            pred, true = fm[k]["masks"][()] >= 128, ft[k]["masks"][()] >= 128
            if pred.shape != true.shape:
                raise DatasetError(f"group '{k}': masks {pred.shape} vs true masks {true.shape}")
            i, u = int(np.logical_and(pred, true).sum()), int(np.logical_or(pred, true).sum())
            per_traj[k] = 1.0 if u == 0 else i / u
            inter, union = inter + i, union + u
            counts = true.sum(axis=(0, 2))  # true foreground pixels per row [H]
            row_fg = counts if row_fg is None else row_fg + counts
            total_frames, hw = total_frames + len(true), true.shape[1:]
    h, w = hw
    below = np.cumsum(row_fg[::-1])[::-1]  # true foreground at rows >= r
    baseline_fg = total_frames * w * (h - np.arange(h))
    ious = below / (baseline_fg + row_fg.sum() - below)
    best = int(np.argmax(ious))
    out = {"per_trajectory": per_traj, "overall": 1.0 if union == 0 else inter / union}
    return out | {"horizon_row": best, "horizon_iou": float(ious[best])}


def main(argv: list[str] | None = None, model=None) -> dict:
    """Generate the masks; returns {"written": [...], "skipped": [...], "scores": ... or None}. model: an already
    built depth model (tests); default: load_depth_model(--encoder, --device, --model-path)."""
    parser = depth_parser(__doc__, "masks", percentile=50.0)
    parser.add_argument("--true-masks", default=None, help="true masks file to score the depth masks against")
    args = parser.parse_args(argv)
    check_depth_args(parser, args)
    src, out = Path(args.input), Path(args.output)
    check_hdf5_file(f"--input {src}", src)
    if args.true_masks is not None:
        check_hdf5_file(f"--true-masks {args.true_masks}", args.true_masks, "a masks file")
    attrs = {"source_file": src.name, **depth_params(args)}

    with h5py.File(src, "r") as fin:
        keys = trajectory_keys(fin)
        if not keys:
            raise DatasetError(f"{src} holds no trajectory groups")
        if args.overwrite:
            out.unlink(missing_ok=True)
        existed = out.exists()
        with h5py.File(out, "a") as fo:
            skipped = [k for k in keys if k in fo and fo[k].attrs.get(COMPLETE_ATTR, False)]
            differ = [a for a, v in attrs.items() if a not in fo.attrs or not _same(fo.attrs[a], v)]
            if existed and differ:
                raise SystemExit(
                    f"{out} exists with different parameters ({', '.join(differ)}): pass --overwrite to replace it"
                )
            if existed and len(skipped) == len(keys):
                raise SystemExit(f"{out} is already complete ({len(keys)} trajectories): pass --overwrite to redo it")
            fo.attrs.update(attrs)
            written = [k for k in keys if k not in skipped]
            if written or model is not None:
                model = load_depth_model(args.encoder, args.device, args.model_path, model=model)
            for k in tqdm(written, desc=f"masks {src.name}", unit="traj"):
                if k in fo:
                    del fo[k]  # cut short by an interruption: redo
                masks = trajectory_depth_masks(model, fin[k]["obs"][()], args)
                group = fo.create_group(k)
                group.create_dataset("masks", data=masks, compression="gzip", chunks=(1, *masks.shape[1:]))
                group.attrs[COMPLETE_ATTR] = True  # written last
                fo.flush()
    if skipped:
        print(f"resumed {out}: {len(skipped)} trajectories already complete")
    print(f"wrote masks of {len(written)} trajectories to {out}")

    scores = None
    if args.true_masks is not None:
        scores = score_against_true(out, Path(args.true_masks))
        for k, iou in scores["per_trajectory"].items():
            print(f"trajectory {k}: IoU {iou:.3f}")
        print(f"overall IoU {scores['overall']:.3f}")
        print(f"horizon baseline (best row {scores['horizon_row']}): IoU {scores['horizon_iou']:.3f}")
        print(json.dumps({"overall_iou": scores["overall"], "horizon_iou": scores["horizon_iou"]}))
    return {"written": written, "skipped": skipped, "scores": scores}


if __name__ == "__main__":
    cli(main)
