"""Blur the backgrounds of a dataset's frames (the release's scripts/blur_hdf5_data.py, reference README
"Blurring Background"):

    python scripts/blur_hdf5_data.py --input data/example-data.hdf5 --output data/example-data-blurred.hdf5 \\
        --encoder vits --percentile 30 --blur-kernel 7 7 --blur-sigma 2.0 [--masks MASKS.hdf5] [--overwrite]

Foreground masks come from --masks (depth masks of scripts/generate_masks_hdf5.py or true masks of collect_data.py
--record_masks=True) or, without it, from DepthAnything V2 with generate_masks_hdf5.py's depth options. Each frame
becomes mask/255 * frame + (1 - mask/255) * GaussianBlur(frame) (src.masks.blur_background).

The output has the input's layout with `obs` blurred, and the root attributes `blur_method` ("gaussian"),
`blur_kernel`, `blur_sigma`, `blur_masks` ("true" / "depth") and `blur_source` (masks file or depth model id). It is
written as `<output>.partial` and renamed when whole; an existing output is refused unless --overwrite.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/blur_hdf5_data.py`: make `src` and `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from scripts import generate_masks_hdf5 as gen  # noqa: E402
from src.errors import DatasetError, MissingKeyError, check_hdf5_file, cli  # noqa: E402
from src.masks import DEPTH_MODEL_IDS, blur_background, kernel_pair, load_depth_model  # noqa: E402


def _copy_group(src: h5py.Group, dst: h5py.Group, obs: np.ndarray) -> None:
    """Copy every member and attribute of a trajectory group, `obs` replaced by `obs` (same storage options)."""
    dst.attrs.update(src.attrs)
    for name, item in src.items():
        if name != "obs":
            src.copy(item, dst, name=name)
            continue
        options = dict(chunks=item.chunks, compression=item.compression, compression_opts=item.compression_opts)
        dst.create_dataset("obs", data=obs, **options).attrs.update(item.attrs)


def main(argv: list[str] | None = None, model=None) -> Path:
    """Write the blurred dataset; returns its path. model: an already built depth model (tests)."""
    parser = gen.depth_parser(__doc__, "blurred dataset", percentile=30.0)
    parser.add_argument("--blur-kernel", type=int, nargs=2, default=[7, 7], help="Gaussian kernel (odd, positive)")
    parser.add_argument("--blur-sigma", type=float, default=2.0, help="Gaussian sigma")
    parser.add_argument("--masks", default=None, help="masks file (depth or true); default: depth masks computed here")
    args = parser.parse_args(argv)
    try:
        kernel = kernel_pair(args.blur_kernel, "--blur-kernel")
    except ValueError as e:
        parser.error(str(e))
    if args.blur_sigma <= 0:
        parser.error(f"--blur-sigma must be positive, got {args.blur_sigma}")
    if args.masks is None:
        gen.check_depth_args(parser, args)
    src, out = Path(args.input), Path(args.output)
    check_hdf5_file(f"--input {src}", src)
    if args.masks is not None:
        check_hdf5_file(f"--masks {args.masks}", args.masks, "a masks file (scripts/generate_masks_hdf5.py)")
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} exists: pass --overwrite to replace it")
    if out.resolve() == src.resolve():
        parser.error("--output must differ from --input")

    masks_file = h5py.File(args.masks, "r") if args.masks is not None else None
    partial = out.with_name(out.name + ".partial")
    try:
        if masks_file is not None:
            method = masks_file.attrs.get("method", "depth")
            method = method.decode() if isinstance(method, bytes) else str(method)
            blur_attrs = {"blur_masks": method, "blur_source": Path(args.masks).name}
            if method == "depth":  # how the depth masks were made, so an evaluation environment can redo them
                depth_keys = ("encoder", "model_id", "percentile", "threshold_alpha", "mask_kernel", "mask_sigma")
                blur_attrs.update({f"blur_{k}": masks_file.attrs[k] for k in depth_keys if k in masks_file.attrs})
        else:
            model = load_depth_model(args.encoder, args.device, args.model_path, model=model)
            blur_attrs = {"blur_masks": "depth", "blur_source": DEPTH_MODEL_IDS[args.encoder]}
            blur_attrs.update({f"blur_{k}": v for k, v in gen.depth_params(args).items() if k != "method"})
        with h5py.File(src, "r") as fin, h5py.File(partial, "w") as fo:
            fo.attrs.update(fin.attrs)
            keys = gen.trajectory_keys(fin)
            for name, item in fin.items():  # anything beside the trajectories, copied as is
                if name not in keys:
                    fin.copy(item, fo, name=name)
            for k in tqdm(keys, desc=f"blur {src.name}", unit="traj"):
                obs = fin[k]["obs"][()]
                if masks_file is not None:
                    if k not in masks_file or "masks" not in masks_file[k]:
                        raise MissingKeyError(f"{args.masks}: no masks for trajectory group '{k}' of {src}")
                    masks = masks_file[k]["masks"][()]
                else:
                    masks = gen.trajectory_depth_masks(model, obs, args)
                if masks.shape != obs.shape[:3]:
                    raise DatasetError(f"group '{k}': masks {masks.shape} do not match frames {obs.shape}")
                _copy_group(fin[k], fo.create_group(k), blur_background(obs, masks, kernel, args.blur_sigma))
            kernel_attr = np.asarray(kernel, dtype=np.int64)
            fo.attrs.update(dict(blur_method="gaussian", blur_kernel=kernel_attr, blur_sigma=float(args.blur_sigma)))
            fo.attrs.update(blur_attrs)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if masks_file is not None:
            masks_file.close()
    print(f"wrote {out} ({len(keys)} trajectories, backgrounds blurred with {blur_attrs['blur_masks']} masks)")
    return out


if __name__ == "__main__":
    cli(main)
