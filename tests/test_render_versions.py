"""scripts/fidelity/compare_render_versions.py: the comparison arithmetic, and a tiny real render under the installed
MuJoCo."""

import json

import numpy as np

from scripts.fidelity import compare_render_versions as crv


def _fake_render_file(path, frames: np.ndarray, qpos: np.ndarray, fovy: float, version: str) -> None:
    task = "cheetah-run"
    out = {
        "meta": np.array(
            json.dumps({"versions": {"mujoco": version, "dm_control": "x", "numpy": "x"}, "tasks": [task]})
        ),
        f"{task}/states/qpos": qpos[:2],
        f"{task}/frames/plain/64": frames,
        f"{task}/model/cam_fovy": np.array([fovy]),
        f"{task}/model/xml_sha": np.array("abc"),
        f"{task}/rollout/qpos": qpos,
        f"{task}/rollout/reward": np.ones(len(qpos) - 1),
        f"{task}/rollout/frame_steps": np.array([0]),
        f"{task}/rollout/frames": frames[:1],
    }
    np.savez_compressed(path, **out)


def test_frame_stats_counts_pixels_and_levels():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 1  # one pixel, one level
    b[1, 2, 3, :] = 200  # one pixel, 200 levels in three channels
    s = crv.frame_stats(a, b)
    assert s["max"] == 200 and s["per_frame_max"] == [1, 200]
    assert s["frac_pixels_differ"] == 2 / 32 and s["frac_pixels_gt2"] == 1 / 32
    assert s["hist"]["[0,1)"] == 96 - 4 and s["hist"]["[1,2)"] == 1 and s["hist"]["[50,256)"] == 3
    assert crv.frame_stats(a, a)["psnr_db"] == float("inf")


def test_compare_mode_reports_frames_model_and_physics(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    qpos = rng.normal(size=(11, 9))
    shifted = frames.copy()
    shifted[:, :8] = 255 - shifted[:, :8]
    late = qpos.copy()
    late[6:] += 1e-4  # the trajectories part after step 5
    a, b, same = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "same.npz"
    _fake_render_file(a, frames, qpos, 45.0, "3.2.0")
    _fake_render_file(b, shifted, late, 40.0, "3.17.0")
    _fake_render_file(same, frames, qpos, 45.0, "3.2.0")

    report = crv.compare(str(a), str(b))
    entry = report["tasks"]["cheetah-run"]
    assert entry["same_states"]
    assert entry["frames/plain/64"]["frac_pixels_differ"] > 0.1
    assert list(entry["model_diffs"]) == ["cam_fovy"]
    physics = entry["physics"]
    assert physics["first_step_diff_above"]["1e-06"] == 6 and physics["first_step_diff_above"]["0.001"] is None

    assert crv.main(["compare", str(a), str(same), "--fail_above", "0"]) == 0
    assert crv.main(["compare", str(a), str(b), "--fail_above", "2", "--json", str(tmp_path / "r.json")]) == 1
    assert json.loads((tmp_path / "r.json").read_text())["B"]["versions"]["mujoco"] == "3.17.0"
    assert "FAIL" in capsys.readouterr().out


def test_real_render_reloads_its_states_and_is_deterministic(tmp_path):
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    common = ["--tasks", "cheetah-run", "--num_states", "2", "--stride", "3", "--physics_steps", "5", "--no_big"]
    assert crv.main(["render", "--out", str(first), *common]) == 0
    assert crv.main(["render", "--out", str(second), "--states", str(first), *common]) == 0
    a = np.load(first)
    assert a["cheetah-run/frames/plain/64"].shape == (2, 64, 64, 3)
    assert int(a["cheetah-run/camera_id"]) == 0
    assert not np.array_equal(a["cheetah-run/frames/plain/64"], a["cheetah-run/frames/distracted/64"])
    report = crv.compare(str(first), str(second))["tasks"]["cheetah-run"]
    assert report["same_states"] and report["model_diffs"] == {}
    assert all(report[k]["max"] == 0 for k in report if k.startswith("frames/"))  # same install: bit-identical
    assert report["physics"]["first_step_diff_above"]["1e-12"] is None
