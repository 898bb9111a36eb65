"""LAPO with the masked reconstruction loss (train_lapo_mask.py): the masked MSE and its gradient, per-frame
stacking of the masks, masks loading (src/data.py: load_masks) and its errors, every stage end to end."""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pyrallis
import pytest
import torch
import torch.nn.functional as F

import train_lapo
import train_lapo_mask
from src.data import DatasetError, load_dataset, load_masks, stacked_masks
from tests.test_train_lapo_idm import data_path, eval_args  # noqa: F401  (data_path: the shared fixture)

REPO = Path(__file__).resolve().parents[1]


def write_masks(path: Path, data_file: str, fill=None, skip_group: str | None = None, bad_group: str | None = None):
    """A masks file in the fixed layout for `data_file`: per group `masks` uint8 [T, H, W] (255 = foreground),
    root attributes source_file / method. Default masks: a random half of each frame (left or right) is
    foreground; `fill(t, h, w)` replaces them."""
    rng = np.random.default_rng(0)
    with h5py.File(data_file, "r") as src, h5py.File(path, "w") as f:
        f.attrs.update({"source_file": str(data_file), "method": "true", "threshold": 0.5})
        for k in src.keys():
            if not k.isdigit() or k == skip_group:
                continue
            t, h, w, _ = src[k]["obs"].shape
            if fill is not None:
                m = fill(t, h, w)
            else:
                m = np.zeros((t, h, w), dtype=np.uint8)
                left = rng.random(t) < 0.5
                m[left, :, : w // 2] = 255
                m[~left, :, w // 2 :] = 255
            if k == bad_group:
                m = m[:, : h // 2]
            f.create_group(k)["masks"] = m
    return str(path)


# ---------------------------------------------------------------- the loss


def test_masked_mse_ignores_masked_out_pixels_exactly():
    torch.manual_seed(0)
    b, k, h, w = 4, 3, 8, 8
    target = torch.rand(b, 3 * k, h, w) * 2 - 1
    masks = torch.zeros(b, k, h, w, dtype=torch.uint8)
    masks[..., : w // 2] = 255  # left half foreground
    masks[1, 2] = 0  # frame 2 of sample 1 entirely background
    weight = (masks > 0).repeat_interleave(3, dim=1)  # [B, 3k, H, W]: mask j on channels 3j .. 3j+2

    pred = (torch.rand(b, 3 * k, h, w) * 2 - 1).requires_grad_(True)
    loss = train_lapo_mask.masked_mse(pred, target, masks)
    loss.backward()
    # the documented normalisation: mean of the squared error over foreground channel-pixels
    expected = ((pred - target).pow(2)[weight]).sum() / (weight.sum() + train_lapo_mask.MASK_EPS)
    torch.testing.assert_close(loss, expected)
    assert (pred.grad[~weight] == 0).all() and (pred.grad[weight] != 0).all()

    changed = pred.detach().clone()
    changed[~weight] = torch.randn(int((~weight).sum())) * 10  # change only the background predictions
    changed.requires_grad_(True)
    loss2 = train_lapo_mask.masked_mse(changed, target, masks)
    loss2.backward()
    assert loss2.item() == loss.item()
    assert torch.equal(changed.grad, pred.grad)


def test_masked_mse_all_ones_is_plain_mse_and_all_zeros_is_zero():
    pred, target = torch.rand(2, 9, 6, 6), torch.rand(2, 9, 6, 6)
    ones = torch.full((2, 3, 6, 6), 255, dtype=torch.uint8)
    torch.testing.assert_close(train_lapo_mask.masked_mse(pred, target, ones), F.mse_loss(pred, target))
    assert train_lapo_mask.masked_mse(pred, target, torch.zeros_like(ones)).item() == 0.0
    half = torch.full_like(ones, 128)  # soft masks weigh, the normalisation divides the weight out
    torch.testing.assert_close(train_lapo_mask.masked_mse(pred, target, half), F.mse_loss(pred, target))


def test_masks_are_aligned_and_stacked_like_the_observation(data_path, tmp_path):  # noqa: F811
    """Mask t = 255 on row (t mod H) only, so each stacked mask names its frame; frame j of a stack sits on
    channels 3j .. 3j+2 of data.obs, and stacked_masks pads at trajectory starts as the frames are padded."""

    def row_of_t(t, h, w):
        m = np.zeros((t, h, w), dtype=np.uint8)
        m[np.arange(t), np.arange(t) % h, :] = 255
        return m

    masks_file = write_masks(tmp_path / "m.hdf5", data_path, fill=row_of_t)
    data = load_dataset(data_path, "cpu", 3, load_states=False, max_trajectories=2)
    masks = load_masks(masks_file, data)
    assert masks.shape == (data.num_frames, 1, data.img_hw, data.img_hw) and masks.dtype == torch.uint8
    assert masks.device == data.frames_device
    start1 = int(data.traj_starts[1])
    idx = torch.tensor([0, 1, 5, start1, start1 + 7])
    stacked = stacked_masks(masks, data, idx, 3)  # [B, 3, H, W]
    assert stacked.shape == (5, 3, data.img_hw, data.img_hw)
    rows = stacked.amax(dim=3).argmax(dim=2)  # the lit row of each stacked mask = its frame's t (mod H)
    assert rows.tolist() == [[0, 0, 0], [0, 0, 1], [3, 4, 5], [0, 0, 0], [5, 6, 7]]
    # the same gather as the observation: frame j of data.obs is channels 3j .. 3j+2
    obs = data.obs(idx, 3)
    stack = data.stack_indices(idx, 3)
    for j in range(3):
        assert torch.equal(obs[:, 3 * j : 3 * j + 3], data.frames[stack[:, j]])
        assert torch.equal(stacked[:, j], masks[stack[:, j], 0])
    # the training loop takes o_{t+1}'s masks as stacked_masks(idx + 1): the frames of batch's next_obs
    b = data.batch(idx[[2, 4]], 3, next_obs=True)
    assert torch.equal(b["next_obs"], data.obs(idx[[2, 4]] + 1, 3))


# ---------------------------------------------------------------- bad inputs


def test_bad_masks_files_are_named(data_path, tmp_path):  # noqa: F811
    data = load_dataset(data_path, "cpu", 3, load_states=False, max_trajectories=2)
    with pytest.raises(FileNotFoundError, match="masks file not found: .*nope.hdf5"):
        load_masks(str(tmp_path / "nope.hdf5"), data)
    bad = write_masks(tmp_path / "bad.hdf5", data_path, bad_group="1")
    hw = data.img_hw
    n1 = int(data.traj_lens[1])
    with pytest.raises(DatasetError, match=rf"group '1'.*\({n1}, {hw // 2}, {hw}\).*\({n1}, {hw}, {hw}\)"):
        load_masks(bad, data)
    missing = write_masks(tmp_path / "missing.hdf5", data_path, skip_group="0")
    with pytest.raises(DatasetError, match="group '0'.*no 'masks'"):
        load_masks(missing, data)


def test_masks_path_is_required(data_path, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(sys, "argv", ["train_lapo_mask", *lapo_mask_args(data_path, None, tmp_path / "r")])
    with pytest.raises(ValueError, match="lapo.masks_path is required"):
        train_lapo_mask.train()
    assert not (tmp_path / "r").exists()


def test_configs_parse_and_keep_the_paper_lapo_values():
    args = ["--lapo.data_path=data/x.hdf5", "--lapo.masks_path=data/x-masks.hdf5"]
    cfg = pyrallis.parse(train_lapo_mask.Config, config_path=str(REPO / "configs/lapo-mask.yaml"), args=args)
    paper = pyrallis.parse(train_lapo.Config, config_path=str(REPO / "configs/lapo.yaml"), args=args[:1])
    assert cfg.lapo.masks_path == "data/x-masks.hdf5"
    for name in ("lapo", "bc", "decoder"):
        mine, theirs = vars(getattr(cfg, name)).copy(), vars(getattr(paper, name)).copy()
        mine.pop("masks_path", None)
        assert mine == theirs, name
    example = pyrallis.parse(train_lapo_mask.Config, config_path=str(REPO / "configs/example/lapo-mask.yaml"), args=[])
    assert example.lapo.masks_path == "data/example-data-masks.hdf5"


# ---------------------------------------------------------------- end to end


def lapo_mask_args(data: str, masks: str | None, run_dir: Path, *extra: str) -> list[str]:
    tiny = ["--lapo.encoder_scale=1", "--lapo.latent_action_dim=32", "--lapo.batch_size=16", "--lapo.num_epochs=1"]
    tiny += ["--lapo.max_trajectories=3", "--lapo.final_probe_batches=2", "--lapo.warmup_epochs=0"]  # ridge: >= 3
    tiny += ["--bc.encoder_scale=1", "--bc.batch_size=16", "--bc.num_epochs=1", "--bc.max_trajectories=2"]
    tiny += ["--decoder.batch_size=16", "--decoder.total_updates=5", "--decoder.hidden_dim=32"]
    paths = [f"--lapo.data_path={data}", f"--bc.data_path={data}", f"--decoder.data_path={data}"]
    paths += [f"--lapo.masks_path={masks}"] if masks else []
    run = [f"--run_dir={run_dir}", "--wandb_mode=disabled", "--device=cpu", "--log_every=5", "--checkpoint_every=5"]
    return paths + tiny + run + eval_args("bc", "decoder") + list(extra)


def test_lapo_mask_all_stages(data_path, tmp_path, monkeypatch):  # noqa: F811
    masks = write_masks(tmp_path / "masks.hdf5", data_path)
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["train_lapo_mask", *lapo_mask_args(data_path, masks, run_dir)])
    train_lapo_mask.train()
    res = json.loads((run_dir / "results.json").read_text())
    assert set(res["stages"]) == {"lapo", "bc", "decoder"}
    for name, stage in res["stages"].items():
        assert stage["seconds"] > 0 and not stage["skipped"], name
    assert np.isfinite(res["metrics"]["lapo/final_action_probe_mse"])
    # the closed-form probe
    for key in ("lapo/ridge_probe_mse", "lapo/ridge_probe_baseline_mse", "lapo/action_variance"):
        assert np.isfinite(res["metrics"][key]) and res["metrics"][key] > 0, key
    assert res["metrics"]["lapo/trained_updates"] == res["metrics"]["lapo/updates"] > 0
    if eval_args("bc")[-1].endswith("=1"):
        assert np.isfinite(res["metrics"]["decoder/eval_returns_mean"])
    for ckpt in ("lam.pt", "latent_bc.pt", "decoder.pt"):
        assert torch.load(run_dir / ckpt, weights_only=False)["done"]
