"""Expert data collection and labeled subsets, with real DCS rendering on short episodes."""

import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from scripts.data_collection.collect_data import COMPLETE_ATTR, Config, collect, episode_seed
from scripts.sample_labeled_data import Config as SampleConfig
from scripts.sample_labeled_data import sample_labeled
from src.envs import make_env

REPO = Path(__file__).resolve().parents[1]

CHEETAH = REPO.parent / "shared" / "experts" / "cheetah-run-expert"
STEPS = 20  # steps per trajectory in these tests


@pytest.fixture(scope="module")
def expert_path() -> Path:
    if not CHEETAH.exists():
        pytest.skip("released cheetah-run expert not available")
    return CHEETAH


def make_config(expert_path: Path, save_path: Path, **overrides) -> Config:
    config = Config(
        checkpoint_path=str(expert_path),
        dcs_backgrounds_path="builtin",
        save_path=str(save_path),
        num_trajectories=3,
        max_episode_steps=STEPS,
        seed=3,
    )
    return replace(config, **overrides)


@pytest.fixture(scope="module")
def dataset(expert_path, tmp_path_factory) -> Path:
    return collect(make_config(expert_path, tmp_path_factory.mktemp("data") / "cheetah.hdf5"))


def read_all(path: Path) -> tuple[dict, dict]:
    """(root attrs, {group: ({dataset: array}, attrs)}) of a file."""
    with h5py.File(path, "r") as f:
        root = dict(f.attrs)
        groups = {}
        for k, g in f.items():
            arrays = {}
            g.visititems(lambda n, d, arrays=arrays: arrays.update({n: d[()]}) if isinstance(d, h5py.Dataset) else None)
            groups[k] = (arrays, dict(g.attrs))
    return root, groups


def assert_same_content(a: Path, b: Path) -> None:
    root_a, groups_a = read_all(a)
    root_b, groups_b = read_all(b)
    assert root_a.keys() == root_b.keys()
    for key in root_a:
        np.testing.assert_equal(root_a[key], root_b[key], err_msg=key)
    assert groups_a.keys() == groups_b.keys()
    for name, (data, attrs) in groups_a.items():
        assert data.keys() == groups_b[name][0].keys()
        for key in data:
            np.testing.assert_array_equal(data[key], groups_b[name][0][key], err_msg=f"{name}/{key}")
        assert attrs == groups_b[name][1]


def test_layout_and_exact_replay(dataset):
    with h5py.File(dataset, "r") as f:
        assert list(f.keys()) == ["0", "1", "2"]
        attrs = dict(f.attrs)
        assert (attrs["domain_name"], attrs["task_name"], attrs["difficulty"]) == (
            "cheetah",
            "run",
            "scale_easy_video_hard",
        )
        assert bool(attrs["dynamic"]) and int(attrs["img_hw"]) == 64 and attrs["split"] == "train"
        assert attrs["background_source"] == "builtin" and int(attrs["max_episode_steps"]) == STEPS
        returns = [float(f[k].attrs["traj_return"]) for k in f]
        assert float(attrs["dataset_return"]) == pytest.approx(np.mean(returns))
        env = make_env("cheetah", "run", "scale_easy_video_hard", dynamic=True, img_hw=64, frame_stack=1)
        for i, name in enumerate(f):
            g = f[name]
            assert g["obs"].dtype == np.uint8 and g["obs"].shape == (STEPS, 64, 64, 3)
            assert g["actions"].dtype == np.float32 and g["actions"].shape == (STEPS, 6)
            assert g["states"].dtype == np.float32 and g["states"].shape == (STEPS, 17)
            assert int(g.attrs["seed"]) == episode_seed(3, i) and bool(g.attrs[COMPLETE_ATTR])
            # Replaying the stored actions from the stored seed reproduces frames, states and rewards exactly;
            # obs[t] is the frame seen before actions[t].
            obs, info = env.reset(seed=int(g.attrs["seed"]))
            rewards = []
            for t in range(STEPS):
                np.testing.assert_array_equal(g["obs"][t], obs, err_msg=f"group {name} frame {t}")
                np.testing.assert_array_equal(g["states"][t], info["state"], err_msg=f"group {name} state {t}")
                obs, reward, _, _, info = env.step(g["actions"][t])
                rewards.append(reward)
            np.testing.assert_array_equal(g["rewards"][()], np.asarray(rewards, dtype=np.float32))
            assert float(g.attrs["traj_return"]) == pytest.approx(sum(rewards))
        assert len({f[k]["obs"][0].tobytes() for k in f}) == 3  # distinct episodes


def test_distractor_state_is_recorded_for_every_frame_and_replays(dataset, expert_path, tmp_path):
    """Each group holds distractors/ (background, camera, color), the state the frame obs[t] shows: a replay of the
    stored actions from the stored seed gives the same states; the background advances one video frame per step;
    vanilla data has no group."""
    env = make_env("cheetah", "run", "scale_easy_video_hard", dynamic=True, img_hw=64, frame_stack=1)
    with h5py.File(dataset, "r") as f:
        assert bool(f.attrs["distractors_recorded"])
        g = f["1"]
        stored = {k: g["distractors"][k][()] for k in g["distractors"]}
        assert set(stored) == {"background", "camera", "color"}
        n_mat = env.dcs_env.physics.model.nmat
        assert {k: v.shape for k, v in stored.items()} == {
            "background": (STEPS, 3), "camera": (STEPS, 6), "color": (STEPS, 3 * n_mat)
        }  # fmt: skip
        assert all(v.dtype == np.float32 for v in stored.values())
        assert g["distractors/camera"].attrs["columns"] == "dx,dy,dz,rx,ry,rz"
        _, info = env.reset(seed=int(g.attrs["seed"]))
        for t in range(STEPS):
            for k, v in env.dcs_env.distractor_state().items():
                np.testing.assert_array_equal(stored[k][t], v, err_msg=f"{k} at frame {t}")
            env.step(g["actions"][t])
    video, frame, direction = stored["background"].T
    assert len(set(video)) == 1 and set(direction) <= {-1.0, 1.0}
    assert set(np.diff(frame)) <= {-1.0, 0.0, 1.0} and np.abs(np.diff(frame)).sum() > STEPS / 2  # it plays
    assert np.abs(stored["camera"]).max() > 1e-3 and np.abs(np.diff(stored["color"], axis=0)).max() > 0  # they move
    vanilla = collect(make_config(expert_path, tmp_path / "v.hdf5", num_trajectories=1, dcs_difficulty="vanilla"))
    with h5py.File(vanilla, "r") as f:
        assert "distractors" not in f["0"] and bool(f.attrs["distractors_recorded"])
    off = collect(make_config(expert_path, tmp_path / "off.hdf5", num_trajectories=1, record_distractors=False))
    with h5py.File(off, "r") as f:
        assert "distractors" not in f["0"] and not bool(f.attrs["distractors_recorded"])


def released_actor_mean(checkpoint: Path, states: np.ndarray) -> np.ndarray:
    """The released PPO actor's mean action, computed here from its state dict with numpy (no clipping)."""
    sd = {k: v.double().numpy() for k, v in torch.load(checkpoint, map_location="cpu", weights_only=True).items()}
    x = np.clip((states - sd["obs_rms.mean"]) / np.sqrt(sd["obs_rms.var"] + 1e-8), -10.0, 10.0)
    for i in (0, 2):
        x = np.tanh(x @ sd[f"actor_mean.{i}.weight"].T + sd[f"actor_mean.{i}.bias"])
    return x @ sd["actor_mean.4.weight"].T + sd["actor_mean.4.bias"]


def test_stored_actions_are_the_raw_actor_mean(dataset, expert_path):
    """The paper's datasets store the expert's raw action; the environment clips what it executes."""
    with h5py.File(dataset, "r") as f:
        assert int(f.attrs["collector_version"]) == 2 and not bool(f.attrs["actions_clipped"])
        assert f.attrs["dcs_camera_mode"] == "release"
        states = np.concatenate([f[k]["states"][()] for k in f])
        actions = np.concatenate([f[k]["actions"][()] for k in f])
    np.testing.assert_allclose(actions, released_actor_mean(expert_path / "checkpoint.pt", states), atol=1e-4)
    outside = (np.abs(actions) > 1.0).mean()
    assert outside > 0.5, outside  # cheetah-run: most entries lie outside [-1, 1] (about 89% over whole episodes)


def test_resuming_a_file_of_the_clipping_collector_is_refused(dataset, expert_path, tmp_path):
    path = tmp_path / "old.hdf5"
    shutil.copy(dataset, path)
    with h5py.File(path, "a") as f:
        del f.attrs["collector_version"], f.attrs["actions_clipped"]
    with pytest.raises(FileExistsError, match="earlier collector, which clipped actions"):
        collect(make_config(expert_path, path, num_trajectories=4))


def test_same_command_gives_same_file_for_any_num_workers(dataset, expert_path, tmp_path):
    again = collect(make_config(expert_path, tmp_path / "again.hdf5", num_workers=2, compression="gzip"))
    root_a, groups_a = read_all(dataset)
    root_b, groups_b = read_all(again)
    for name in groups_a:
        for key in ("obs", "actions", "states", "rewards"):
            np.testing.assert_array_equal(groups_a[name][0][key], groups_b[name][0][key], err_msg=f"{name}/{key}")
    with h5py.File(again, "r") as f:
        assert f["0"]["obs"].compression == "gzip"


def test_resume_after_interruption_equals_uninterrupted_run(dataset, expert_path, tmp_path, capsys):
    path = tmp_path / "resumed.hdf5"
    shutil.copy(dataset, path)
    with h5py.File(path, "a") as f:  # as if killed while writing trajectory 2: a trailing incomplete group
        del f["2"]
        partial = f.create_group("2")
        partial.create_dataset("obs", data=np.zeros((5, 64, 64, 3), np.uint8))
        f.attrs["dataset_return"] = 0.0
    collect(make_config(expert_path, path))
    assert_same_content(path, dataset)

    mtime = path.stat().st_mtime_ns
    collect(make_config(expert_path, path))  # complete: nothing to do
    assert "already complete" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == mtime


def bad_input_cases(expert_path: Path, tmp_path: Path) -> dict:
    davis = tmp_path / "davis"
    from src.dcs import write_builtin_as_davis

    write_builtin_as_davis(davis, split="train", num_videos=2, num_frames=3)
    return {
        "missing background folder": (dict(dcs_backgrounds_path=str(tmp_path / "no-such-folder")), "no-such-folder"),
        "missing videos of the split": (
            dict(dcs_backgrounds_path=str(davis), dcs_backgrounds_split="val"),
            r"lacks 30 video\(s\) of the split",
        ),
        "unknown difficulty": (dict(dcs_difficulty="extreme"), "extreme"),
        "checkpoint does not fit": (dict(domain_name="walker", task_name="run"), r"17.*24"),
        "missing checkpoint": (dict(checkpoint_path=str(tmp_path / "no-expert")), "no-expert"),
        "unknown camera mode": (dict(dcs_camera_mode="sideways"), r"sideways.*\('release', 'corrected'\)"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing background folder",
        "missing videos of the split",
        "unknown difficulty",
        "checkpoint does not fit",
        "missing checkpoint",
        "unknown camera mode",
    ],
)
def test_bad_inputs_fail_before_writing(case, expert_path, tmp_path):
    overrides, match = bad_input_cases(expert_path, tmp_path)[case]
    out = tmp_path / "out.hdf5"
    with pytest.raises((ValueError, FileNotFoundError, KeyError), match=match):
        collect(make_config(expert_path, out, **overrides))
    assert not out.exists()


def test_existing_file_of_another_command_is_kept(dataset, expert_path, tmp_path):
    path = tmp_path / "other.hdf5"
    shutil.copy(dataset, path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="seed: file has 3, command gives 4"):
        collect(make_config(expert_path, path, seed=4))
    assert path.read_bytes() == before


def test_sample_labeled_data(dataset, tmp_path):
    out = tmp_path / "labeled.hdf5"
    sample_labeled(SampleConfig(data_path=str(dataset), save_path=str(out), chunk_size=7, num_trajectories=2, seed=1))
    src_root, src_groups = read_all(dataset)
    root, groups = read_all(out)
    assert list(groups) == ["0", "1"]
    for key in ("domain_name", "task_name", "difficulty", "dynamic", "img_hw", "split"):
        assert root[key] == src_root[key]
    originals = [int(groups[k][1]["original_traj_idx"]) for k in groups]
    assert len(set(originals)) == 2 and originals == sorted(originals)
    for data, attrs in groups.values():
        src_data, src_attrs = src_groups[str(attrs["original_traj_idx"])]
        for key in src_data:
            np.testing.assert_array_equal(data[key], src_data[key])
        assert {k: v for k, v in attrs.items() if k != "original_traj_idx"} == src_attrs
    assert float(root["dataset_return"]) == pytest.approx(np.mean([groups[k][1]["traj_return"] for k in groups]))

    with pytest.raises(FileExistsError, match="labeled.hdf5"):
        sample_labeled(SampleConfig(data_path=str(dataset), save_path=str(out), num_trajectories=2))
    too_many = tmp_path / "too-many.hdf5"
    with pytest.raises(ValueError, match="holds only 3"):
        sample_labeled(SampleConfig(data_path=str(dataset), save_path=str(too_many), num_trajectories=4))
    assert not too_many.exists()

    broken = tmp_path / "broken.hdf5"
    shutil.copy(dataset, broken)
    with h5py.File(broken, "a") as f:
        del f["1"]["states"]
    with pytest.raises(KeyError, match=r"broken.hdf5.*'1'.*'states'"):
        sample_labeled(SampleConfig(data_path=str(broken), save_path=str(tmp_path / "x.hdf5"), num_trajectories=1))
    assert not (tmp_path / "x.hdf5").exists()
