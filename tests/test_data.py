"""Frame stacking, offsets and validation of the HDF5 data path on hand-made files."""

import warnings

import h5py
import numpy as np
import pytest
import torch

from src.data import DatasetError, check_compatible, load_dataset, normalize_obs, num_batches, stack_channels

ATTRS = dict(domain_name="cheetah", task_name="run", difficulty="vanilla", dynamic=False, img_hw=8, split="train")


def write_file(path, lengths, act_dim=2, img_hw=8, attrs=ATTRS, skip_key=None):
    """Trajectory i, step t: every pixel of obs[t] equals 100 * i + t; actions[t] = [t, i]; states[t] = [t]."""
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        for i, n in enumerate(lengths):
            g = f.create_group(str(i))
            g["obs"] = np.broadcast_to(
                (100 * i + np.arange(n)).astype(np.uint8)[:, None, None, None], (n, img_hw, img_hw, 3)
            )
            g["actions"] = np.stack([np.arange(n), np.full(n, i)] + [np.zeros(n)] * (act_dim - 2), 1).astype(np.float32)
            if skip_key != "states":
                g["states"] = np.arange(n, dtype=np.float32)[:, None]
            g.attrs["traj_return"] = float(i)
    return str(path)


def frame_ids(stacked: torch.Tensor) -> list[list[int]]:
    """[B, 3k, H, W] -> the frame value of each of the k stacked frames (oldest first)."""
    return stacked[:, ::3, 0, 0].tolist()


def test_frame_stack_pads_with_first_frame_and_orders_oldest_first(tmp_path):
    data = load_dataset(write_file(tmp_path / "d.hdf5", [5, 7]), frame_stack=3, min_offset=1)
    assert data.num_frames == 12 and data.num_trajectories == 2
    obs = data.obs(torch.tensor([0, 1, 2, 4, 5, 6, 11]), 3)
    assert obs.shape == (7, 9, 8, 8) and obs.dtype == torch.uint8
    assert frame_ids(obs) == [
        [0, 0, 0],
        [0, 0, 1],
        [0, 1, 2],
        [2, 3, 4],
        [100, 100, 100],
        [100, 100, 101],
        [104, 105, 106],
    ]


def test_next_and_future_observations_stay_in_the_trajectory(tmp_path):
    data = load_dataset(write_file(tmp_path / "d.hdf5", [15, 20]), frame_stack=3, min_offset=10)
    valid = data.valid_indices(10)
    # t + K <= T - 1 in each trajectory
    assert valid.tolist() == list(range(0, 5)) + list(range(15, 25))
    torch.manual_seed(0)
    for _ in range(20):
        batch = data.batch(valid, 3, future_offset=10, next_obs=True)
        t = frame_ids(batch["obs"])
        nxt = frame_ids(batch["next_obs"])
        fut = frame_ids(batch["future_obs"])
        k = batch["offsets"].tolist()
        for i in range(len(valid)):
            assert 1 <= k[i] <= 10
            assert nxt[i] == t[i][1:] + [t[i][-1] + 1]  # o_{t+1}: the stack of t shifted by one frame
            assert fut[i][-1] == t[i][-1] + k[i]  # o_{t+k}
            assert fut[i][-1] // 100 == t[i][-1] // 100  # ... of the same trajectory
        assert batch["actions"][:, 0].tolist() == [float(v[-1] % 100) for v in t]
        assert batch["actions"][:, 1].tolist() == [float(v[-1] // 100) for v in t]


def test_actions_and_states_align_with_frames(tmp_path):
    data = load_dataset(write_file(tmp_path / "d.hdf5", [6, 6]), frame_stack=3, min_offset=0)
    idx = torch.tensor([3, 8])
    batch = data.batch(idx, 3)
    assert batch["actions"].tolist() == [[3.0, 0.0], [2.0, 1.0]]
    assert batch["states"].tolist() == [[3.0], [2.0]]
    assert frame_ids(batch["obs"]) == [[1, 2, 3], [100, 101, 102]]


def test_frames_are_read_on_first_use_only(tmp_path):
    data = load_dataset(write_file(tmp_path / "d.hdf5", [6, 7]), frame_stack=3, min_offset=1)
    assert data._frames is None  # metadata, actions and states only: a skipped stage reads no frames
    assert data.num_frames == 13 and data.img_hw == 8 and len(data.valid_indices(1)) == 11
    assert data.batch(torch.tensor([7]), 3)["actions"].tolist() == [[1.0, 1.0]]
    assert data._frames is not None and data.frames.shape == (13, 3, 8, 8)


def test_epoch_covers_every_valid_index_once(tmp_path):
    data = load_dataset(write_file(tmp_path / "d.hdf5", [8, 9]), frame_stack=3, min_offset=1)
    valid = data.valid_indices(1)
    seen = torch.cat(list(data.epoch(valid, 5)))
    assert len(seen) == (len(valid) // 5) * 5
    assert len(set(seen.tolist())) == len(seen) and set(seen.tolist()) <= set(valid.tolist())


def test_normalize_and_channel_layout():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8)
    assert torch.allclose(normalize_obs(x), torch.tensor([-1.0, 1.0, (51 / 255 - 0.5) * 2]))
    frames = torch.arange(2 * 3 * 2 * 2 * 3, dtype=torch.uint8).reshape(2, 3, 2, 2, 3)  # [B, k, H, W, 3]
    stacked = stack_channels(frames.permute(0, 1, 4, 2, 3))  # stored channels first: [B, k, 3, H, W]
    # the environment's channel-last stack [H, W, 3k] concatenates frames oldest first: same order
    env_layout = torch.cat([frames[:, j] for j in range(3)], dim=-1)  # [B, H, W, 9]
    assert torch.equal(stacked, env_layout.permute(0, 3, 1, 2))


def test_too_short_trajectory_is_named(tmp_path):
    path = write_file(tmp_path / "d.hdf5", [20, 5])
    with pytest.raises(DatasetError, match=r"trajectory '1' has 5 steps.*3 \+ 10"):
        load_dataset(path, frame_stack=3, min_offset=10)


def test_missing_key_and_attribute_are_named(tmp_path):
    path = write_file(tmp_path / "nostates.hdf5", [6], skip_key="states")
    with pytest.raises(DatasetError, match=r"nostates.hdf5: group '0' has no 'states'"):
        load_dataset(path, frame_stack=3, min_offset=0)
    attrs = {k: v for k, v in ATTRS.items() if k != "task_name"}
    path = write_file(tmp_path / "noattr.hdf5", [6], attrs=attrs)
    with pytest.raises(DatasetError, match=r"noattr.hdf5: root attribute\(s\) \['task_name'\] missing"):
        load_dataset(path)
    with pytest.raises(FileNotFoundError, match="nowhere.hdf5"):
        load_dataset(str(tmp_path / "nowhere.hdf5"))


def test_incompatible_labeled_set_is_named(tmp_path):
    full = load_dataset(write_file(tmp_path / "full.hdf5", [6]), min_offset=0)
    other = load_dataset(write_file(tmp_path / "labeled.hdf5", [6], act_dim=3), min_offset=0)
    with pytest.raises(DatasetError, match=r"labeled set .*labeled.hdf5 has action size 3 but .*full.hdf5 has 2"):
        check_compatible(full, other)
    attrs = {**ATTRS, "img_hw": 16}
    small = load_dataset(write_file(tmp_path / "big.hdf5", [6], img_hw=16, attrs=attrs), min_offset=0)
    with pytest.raises(DatasetError, match="16 px frames"):
        check_compatible(full, small)


def test_file_of_the_clipping_collector_is_read_with_a_warning(tmp_path):
    """Files of the earlier collector (background_source, no collector_version) hold clipped actions."""
    old = write_file(tmp_path / "old.hdf5", [8], attrs={**ATTRS, "background_source": "builtin"})
    with pytest.warns(UserWarning, match=r"old\.hdf5: its actions were clipped to \[-1, 1\] by the earlier collector"):
        load_dataset(old, frame_stack=3, min_offset=1)
    flagged = write_file(tmp_path / "flagged.hdf5", [8], attrs={**ATTRS, "actions_clipped": True})
    with pytest.warns(UserWarning, match="flagged.hdf5"):
        load_dataset(flagged, frame_stack=3, min_offset=1)
    new = {**ATTRS, "background_source": "builtin", "collector_version": 2, "actions_clipped": False}
    released = ATTRS  # the paper's files carry neither attribute: raw actions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(write_file(tmp_path / "new.hdf5", [8], attrs=new), frame_stack=3, min_offset=1)
        load_dataset(write_file(tmp_path / "released.hdf5", [8], attrs=released), frame_stack=3, min_offset=1)


def test_epoch_keeps_the_last_partial_batch_when_asked(tmp_path):
    data = load_dataset(write_file(tmp_path / "d.hdf5", [8, 9]), frame_stack=3, min_offset=1)
    valid = data.valid_indices(1)  # 7 + 8 = 15 transitions
    batches = list(data.epoch(valid, 4, drop_last=False))
    assert [len(b) for b in batches] == [4, 4, 4, 3] and num_batches(15, 4, drop_last=False) == 4
    assert sorted(torch.cat(batches).tolist()) == sorted(valid.tolist())
    assert [len(b) for b in data.epoch(valid, 4)] == [4, 4, 4] and num_batches(15, 4) == 3
