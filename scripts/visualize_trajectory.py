"""Play back one trajectory of an HDF5 dataset, optionally beside its blurred copy and a mask overlay.

    python scripts/visualize_trajectory.py --input data/example-data.hdf5 --trajectory 0 --fps 30
    python scripts/visualize_trajectory.py --input data/example-data.hdf5 \
        --input-blurred data/example-data-blurred.hdf5 --trajectory 0
    python scripts/visualize_trajectory.py --input data/example-data.hdf5 --masks masks.hdf5 --save out.gif

Panels, left to right: original, blurred (if given), mask overlay (if given: the background, mask < 128, tinted
blue). Window controls: `q` quit, `p` pause/resume, `r` restart. With `--save out.gif` (or `out.mp4` where
matplotlib finds ffmpeg) no window opens: one frame per step is written.
"""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/visualize_trajectory.py`: make `src` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import matplotlib  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402

from src.errors import UserError, cli  # noqa: E402

PANEL_GAP = 4  # pixels (after scaling) of white between panels
TITLE_PX = 28  # pixels of figure height reserved for the title
BACKGROUND_TINT = np.array([40, 80, 200], dtype=np.float32)  # colour the mask overlay blends into the background
TINT_WEIGHT = 0.6


class ViewerError(UserError, ValueError):
    """Bad input: missing file, trajectory out of range, or files that do not match."""


@dataclass
class Trajectory:
    index: int
    obs: np.ndarray  # uint8 [T, H, W, 3]
    blurred: np.ndarray | None = None  # as obs
    masks: np.ndarray | None = None  # uint8 [T, H, W], 255 = foreground

    def __len__(self) -> int:
        return len(self.obs)


def _read_group(path: str, index: int, key: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ViewerError(f"file not found: {path}")
    if not h5py.is_hdf5(path):
        raise ViewerError(f"{path}: not an HDF5 file; expected a dataset (or blurred dataset, masks file)")
    with h5py.File(path, "r") as f:
        indices = sorted(int(k) for k in f.keys() if k.isdigit())
        if index < 0 or str(index) not in f:
            valid = f"{indices[0]}..{indices[-1]}" if indices else "none (no trajectory groups)"
            raise ViewerError(f"trajectory {index} is out of range for {path}: valid indices are {valid}")
        group = f[str(index)]
        if key not in group:
            raise ViewerError(f"group '{index}' of {path} has no '{key}' dataset (it has: {sorted(group.keys())})")
        return np.asarray(group[key][()])


def load_trajectory(
    path: str, index: int, blurred_path: str | None = None, masks_path: str | None = None, steps: int | None = None
) -> Trajectory:
    """Read trajectory `index` of `path` (and of the blurred / masks files), checking that their shapes match."""
    obs = _read_group(path, index, "obs")
    if obs.ndim != 4 or obs.shape[-1] != 3:
        raise ViewerError(f"group '{index}' of {path}: obs must be [T, H, W, 3], got shape {obs.shape}")
    blurred = masks = None
    if blurred_path is not None:
        blurred = _read_group(blurred_path, index, "obs")
        if blurred.shape != obs.shape:
            raise ViewerError(
                f"group '{index}': obs shape {blurred.shape} in {blurred_path} does not match "
                f"obs shape {obs.shape} in {path}"
            )
    if masks_path is not None:
        masks = _read_group(masks_path, index, "masks")
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.shape != obs.shape[:3]:
            raise ViewerError(
                f"group '{index}': masks shape {masks.shape} in {masks_path} does not match "
                f"obs shape {obs.shape} in {path} (expected masks {obs.shape[:3]})"
            )
    if steps is not None:
        if steps < 1:
            raise ViewerError(f"--steps must be at least 1, got {steps}")
        obs, blurred, masks = (None if a is None else a[:steps] for a in (obs, blurred, masks))
    return Trajectory(index=index, obs=obs, blurred=blurred, masks=masks)


def mask_overlay(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Frame with the background (mask < 128) darkened and tinted blue; foreground pixels are unchanged."""
    out = frame.copy()
    background = mask < 128
    tinted = (1 - TINT_WEIGHT) * frame[background].astype(np.float32) + TINT_WEIGHT * BACKGROUND_TINT
    out[background] = np.round(tinted).astype(np.uint8)
    return out


def composite_frame(traj: Trajectory, t: int, scale: int = 1) -> np.ndarray:
    """Panels of step t side by side (original, blurred, mask overlay), scaled, with white gaps between them."""
    panels = [traj.obs[t]]
    if traj.blurred is not None:
        panels.append(traj.blurred[t])
    if traj.masks is not None:
        panels.append(mask_overlay(traj.obs[t], traj.masks[t]))
    panels = [p.repeat(scale, axis=0).repeat(scale, axis=1) for p in panels]  # nearest-neighbour
    spacer = np.full((panels[0].shape[0], PANEL_GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([part for panel in panels for part in (spacer, panel)][1:], axis=1)


def panel_names(traj: Trajectory) -> list[str]:
    return ["original"] + ["blurred"] * (traj.blurred is not None) + ["mask overlay"] * (traj.masks is not None)


class Viewer:
    """Playback state (step, paused, closed) and the matplotlib figure that shows it."""

    def __init__(self, traj: Trajectory, scale: int = 6, fps: float = 30.0, loop: bool = True):
        if scale < 1:
            raise ViewerError(f"--scale must be at least 1, got {scale}")
        if fps <= 0:
            raise ViewerError(f"--fps must be positive, got {fps}")
        self.traj, self.scale, self.fps, self.loop = traj, scale, fps, loop
        self.step, self.paused, self.closed = 0, False, False
        self.fig = self._image = self._title = self._timer = None

    def title(self) -> str:
        state = "  [paused]" if self.paused else ""
        names = " | ".join(panel_names(self.traj))
        return f"trajectory {self.traj.index}  step {self.step}/{len(self.traj) - 1}{state}   ({names})"

    def frame(self) -> np.ndarray:
        return composite_frame(self.traj, self.step, self.scale)

    def handle_key(self, key: str | None) -> None:
        """q quits, p toggles pause, r restarts at step 0; other keys are ignored."""
        if key == "q":
            self.close()
        elif key == "p":
            self.paused = not self.paused
        elif key == "r":
            self.step = 0
        self.redraw()

    def advance(self) -> None:
        """Move one step forward unless paused; at the end, wrap to 0 (loop) or stay on the last frame."""
        if self.paused or self.closed:
            return
        if self.step + 1 < len(self.traj):
            self.step += 1
        elif self.loop:
            self.step = 0
        self.redraw()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.stop()
        if self.fig is not None:
            plt.close(self.fig)

    def build_figure(self, dpi: int = 100):
        """Figure sized so that one composite pixel is one screen pixel, with a title strip on top."""
        frame = self.frame()
        height, width = frame.shape[:2]
        fig = plt.figure(figsize=(width / dpi, (height + TITLE_PX) / dpi), dpi=dpi)
        ax = fig.add_axes((0, 0, 1, height / (height + TITLE_PX)))
        ax.set_axis_off()
        self._image = ax.imshow(frame, interpolation="nearest")
        self._title = fig.text(0.5, 1 - 0.5 * TITLE_PX / (height + TITLE_PX), self.title(), ha="center", va="center")
        self._title.set_fontsize(9)
        self.fig = fig
        return fig

    def redraw(self) -> None:
        if self.fig is None or self.closed:
            return
        self._image.set_data(self.frame())
        self._title.set_text(self.title())
        self.fig.canvas.draw_idle()

    def connect(self) -> None:
        """Wire key presses and a playback timer to the figure (building it if needed)."""
        if self.fig is None:
            self.build_figure()
        # Keep matplotlib's own shortcuts (q = quit, p = pan, r = home) from also acting on our keys.
        for name in [k for k in plt.rcParams if k.startswith("keymap.")]:
            plt.rcParams[name] = [k for k in plt.rcParams[name] if k not in ("q", "p", "r")]
        self.fig.canvas.mpl_connect("key_press_event", lambda event: self.handle_key(event.key))
        self.fig.canvas.mpl_connect("close_event", lambda _event: setattr(self, "closed", True))
        self._timer = self.fig.canvas.new_timer(interval=max(1, int(round(1000 / self.fps))))
        self._timer.add_callback(self.advance)
        self._timer.start()

    def save(self, path: str) -> int:
        """Write one frame per step to `path` (.gif with pillow, .mp4 with ffmpeg); returns the frame count."""
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in (".gif", ".mp4"):
            raise ViewerError(f"cannot write {path}: --save supports .gif (and .mp4 where ffmpeg exists)")
        if suffix == ".mp4" and not animation.writers.is_available("ffmpeg"):
            raise ViewerError(f"cannot write {path}: matplotlib finds no ffmpeg writer; save as .gif instead")
        writer = (animation.PillowWriter if suffix == ".gif" else animation.FFMpegWriter)(fps=self.fps)
        self.build_figure()
        with writer.saving(self.fig, path, dpi=self.fig.dpi):
            for t in range(len(self.traj)):
                self.step = t
                self.redraw()
                writer.grab_frame()
        return len(self.traj)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="HDF5 dataset with groups '0', '1', ... holding obs")
    parser.add_argument("--input-blurred", default=None, help="blurred copy of --input, shown beside it")
    parser.add_argument("--masks", default=None, help="HDF5 file with the same groups holding masks [T, H, W]")
    parser.add_argument("--trajectory", type=int, default=0, help="index of the trajectory (group name)")
    parser.add_argument("--fps", type=float, default=30.0, help="playback / saved frame rate")
    parser.add_argument("--scale", type=int, default=6, help="nearest-neighbour upscaling factor of each frame")
    parser.add_argument("--steps", type=int, default=None, help="show only the first N steps")
    parser.add_argument("--save", default=None, help="write out.gif (or out.mp4) with one frame per step, no window")
    parser.add_argument("--no-loop", action="store_true", help="stop on the last frame instead of restarting")
    args = parser.parse_args(argv)
    try:
        traj = load_trajectory(args.input, args.trajectory, args.input_blurred, args.masks, args.steps)
        viewer = Viewer(traj, scale=args.scale, fps=args.fps, loop=not args.no_loop)
        if args.save:
            matplotlib.use("Agg")
            count = viewer.save(args.save)
            viewer.close()
            print(f"wrote {count} frames to {args.save}")
            return 0
    except ViewerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    backend = matplotlib.get_backend().lower()
    if backend in ("agg", "pdf", "ps", "svg", "cairo", "pgf", "template") or backend.endswith("inline"):
        print(f"error: no interactive display (matplotlib backend '{backend}'); use --save out.gif", file=sys.stderr)
        return 2
    viewer.connect()
    print("controls: q quit, p pause/resume, r restart")
    plt.show()
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
