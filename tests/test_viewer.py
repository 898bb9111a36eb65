"""scripts/visualize_trajectory.py: composite frames, mask overlay, key handling, --save and bad inputs (headless)."""

import os

import matplotlib

matplotlib.use("Agg")

import h5py  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import animation  # noqa: E402
from matplotlib.backend_bases import KeyEvent  # noqa: E402
from PIL import Image  # noqa: E402

from scripts import visualize_trajectory as vt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "data", "example-data.hdf5")
T, H, W = 5, 8, 10


def _write(path, key, arrays):
    with h5py.File(path, "w") as f:
        for i, a in enumerate(arrays):
            f.create_group(str(i)).create_dataset(key, data=a)
    return str(path)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    obs = [rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8) for _ in range(2)]
    masks = [np.where(rng.random((T, H, W)) < 0.5, 255, 0).astype(np.uint8) for _ in range(2)]
    return {
        "obs": obs,
        "masks": masks,
        "input": _write(tmp_path / "data.hdf5", "obs", obs),
        "blurred": _write(tmp_path / "blurred.hdf5", "obs", [255 - o for o in obs]),
        "mask_file": _write(tmp_path / "masks.hdf5", "masks", masks),
    }


def _gif_frames(path):
    with Image.open(path) as im:
        return im.n_frames, im.size


def test_save_gif_one_frame_per_step(files, tmp_path):
    out = str(tmp_path / "out.gif")
    argv = ["--input", files["input"], "--input-blurred", files["blurred"], "--masks", files["mask_file"]]
    assert vt.main([*argv, "--trajectory", "1", "--scale", "3", "--save", out]) == 0
    n, size = _gif_frames(out)
    assert n == T
    assert size[0] == 3 * W * 3 + 2 * vt.PANEL_GAP


@pytest.mark.skipif(not os.path.exists(EXAMPLE), reason="no example data")
def test_save_gif_example_data_steps(tmp_path):
    out = str(tmp_path / "example.gif")
    assert vt.main(["--input", EXAMPLE, "--trajectory", "0", "--steps", "10", "--save", out]) == 0
    n, size = _gif_frames(out)
    assert n == 10
    assert size == (64 * 6, 64 * 6 + vt.TITLE_PX)


def test_panel_layout(files):
    traj = vt.load_trajectory(files["input"], 0)
    assert vt.composite_frame(traj, 0, scale=4).shape == (H * 4, W * 4, 3)
    traj = vt.load_trajectory(files["input"], 0, files["blurred"], files["mask_file"])
    frame = vt.composite_frame(traj, 2, scale=4)
    assert frame.shape == (H * 4, 3 * W * 4 + 2 * vt.PANEL_GAP, 3)
    # panels in order original | blurred | overlay, nearest-neighbour scaled, white gaps between
    step = W * 4 + vt.PANEL_GAP
    np.testing.assert_array_equal(frame[::4, 0 : W * 4 : 4], files["obs"][0][2])
    np.testing.assert_array_equal(frame[::4, step : step + W * 4 : 4], 255 - files["obs"][0][2])
    assert (frame[:, W * 4 : step] == 255).all()
    assert vt.panel_names(traj) == ["original", "blurred", "mask overlay"]


def test_mask_overlay_changes_only_background(files):
    frame, mask = files["obs"][0][0], files["masks"][0][0]
    over = vt.mask_overlay(frame, mask)
    foreground = mask == 255
    np.testing.assert_array_equal(over[foreground], frame[foreground])
    changed = (over != frame).any(axis=-1)
    assert changed[~foreground].mean() > 0.9  # a pixel equal to the tint colour itself would stay the same
    assert not changed[foreground].any()


def _press(fig, key):
    fig.canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", fig.canvas, key))


def test_interactive_keys(files):
    traj = vt.load_trajectory(files["input"], 0, files["blurred"], files["mask_file"])
    viewer = vt.Viewer(traj, scale=2, fps=10)
    fig = viewer.build_figure()
    viewer.connect()
    assert plt.fignum_exists(fig.number)
    viewer.advance()
    viewer.advance()
    assert viewer.step == 2 and not viewer.paused
    _press(fig, "p")
    assert viewer.paused and "paused" in viewer.title()
    viewer.advance()
    assert viewer.step == 2  # paused: the timer does not move on
    _press(fig, "p")
    assert not viewer.paused
    viewer.advance()
    assert viewer.step == 3
    _press(fig, "r")
    assert viewer.step == 0
    assert "trajectory 0" in viewer.title() and "step 0" in viewer.title()
    np.testing.assert_array_equal(viewer._image.get_array(), viewer.frame())
    for _ in range(T):
        viewer.advance()
    assert viewer.step == 0  # loops after the last step
    _press(fig, "x")  # unknown keys are ignored
    assert not viewer.closed
    _press(fig, "q")
    assert viewer.closed
    assert not plt.fignum_exists(fig.number)


def test_bad_inputs(files, tmp_path, capsys):
    with pytest.raises(vt.ViewerError, match=r"out of range for .*data\.hdf5.*0\.\.1"):
        vt.load_trajectory(files["input"], 2)
    with pytest.raises(vt.ViewerError, match="out of range"):
        vt.load_trajectory(files["input"], -1)
    with pytest.raises(vt.ViewerError, match="file not found"):
        vt.load_trajectory(str(tmp_path / "missing.hdf5"), 0)
    with pytest.raises(vt.ViewerError, match="file not found"):
        vt.load_trajectory(files["input"], 0, blurred_path=str(tmp_path / "missing.hdf5"))

    short = _write(tmp_path / "short.hdf5", "obs", [o[:-1] for o in files["obs"]])
    with pytest.raises(vt.ViewerError, match=r"group '1'.*\(4, 8, 10, 3\).*\(5, 8, 10, 3\)"):
        vt.load_trajectory(files["input"], 1, blurred_path=short)
    small_masks = _write(tmp_path / "small_masks.hdf5", "masks", [m[:, :-1] for m in files["masks"]])
    with pytest.raises(vt.ViewerError, match=r"group '0'.*\(5, 7, 10\).*\(5, 8, 10, 3\)"):
        vt.load_trajectory(files["input"], 0, masks_path=small_masks)
    one_group = _write(tmp_path / "one.hdf5", "obs", files["obs"][:1])
    with pytest.raises(vt.ViewerError, match="out of range for .*one.hdf5"):
        vt.load_trajectory(files["input"], 1, blurred_path=one_group)
    with pytest.raises(vt.ViewerError, match="no 'masks'"):
        vt.load_trajectory(files["input"], 0, masks_path=files["blurred"])

    assert vt.main(["--input", files["input"], "--trajectory", "7", "--save", str(tmp_path / "x.gif")]) == 2
    assert "out of range" in capsys.readouterr().err
    assert vt.main(["--input", files["input"], "--save", str(tmp_path / "x.avi")]) == 2
    assert ".gif" in capsys.readouterr().err
    if not animation.writers.is_available("ffmpeg"):
        assert vt.main(["--input", files["input"], "--save", str(tmp_path / "x.mp4")]) == 2
        assert "save as .gif" in capsys.readouterr().err
    assert vt.main(["--input", files["input"]]) == 2  # Agg: no window to open
    assert "--save" in capsys.readouterr().err
