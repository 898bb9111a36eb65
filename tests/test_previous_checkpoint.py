"""What users already have still works: run directories written by the previous version of the code (commit 675aeb0,
before src/ was flattened) load in this one. tests/data/previous-version/ holds a tiny random dataset (16 px frames)
and two run directories of train_laom_labels.py with --lam_only: `finished` (a whole LAM stage) and `unfinished`
(stopped by Ctrl-C after update 3 of 9, through the stage's test hook LAOM_INTERRUPT_AT=lapo:3). Both were written
from inside that folder with the arguments of `args` below (`--run_dir=finished`, `--run_dir=unfinished`)."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import train_laom_labels
from src.data import Shapes
from src.run import main

PREVIOUS = Path(__file__).resolve().parent / "data" / "previous-version"
ROOT = PREVIOUS.parents[2]


def args(run_dir: str, *extra: str) -> list[str]:
    data = ["--lapo.data_path=data.hdf5", "--lapo.labeled_data_path=data.hdf5", "--lapo.eval_data_path=data.hdf5"]
    lam = ["--lapo.encoder_scale=1", "--lapo.encoder_num_res_blocks=0", "--lapo.act_head_dim=4"]
    lam += ["--lapo.obs_head_dim=4", "--lapo.latent_action_dim=4", "--lapo.batch_size=8", "--lapo.labeled_batch_size=4"]
    lam += ["--lapo.ridge_probe_samples=20", "--lapo.final_probe_batches=1", "--lapo.frame_stack=1"]
    lam += ["--bc.frame_stack=1", "--lapo.future_obs_offset=2", "--bc.data_path=data.hdf5"]
    run = ["--wandb_mode=disabled", "--device=cpu", "--lam_only=true", "--log_every=4", f"--run_dir={run_dir}"]
    return [f"--config_path={ROOT / 'configs/example/laom-labels.yaml'}", *run, *data, *lam, *extra]


def run(monkeypatch, run_dir: str, *extra: str) -> None:
    monkeypatch.setattr(sys, "argv", ["train_laom_labels", *args(run_dir, *extra)])
    monkeypatch.delenv("LAOM_INTERRUPT_AT", raising=False)
    main(train_laom_labels.train)


def numbers(run_dir: Path) -> dict:
    """results.json's metrics without wall times and counts of what trained in this process."""
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    return {k: v for k, v in metrics.items() if k not in ("seconds", "lapo/trained_updates")}


@pytest.fixture
def previous(tmp_path, monkeypatch) -> Path:
    """A copy of the previous version's run directories, the working directory of the test."""
    shutil.copytree(PREVIOUS, tmp_path / "previous")
    monkeypatch.chdir(tmp_path / "previous")
    return tmp_path / "previous"


def test_the_networks_keep_their_state_dict_names():
    saved = torch.load(PREVIOUS / "finished" / "lam.pt", weights_only=False)
    cfg = train_laom_labels.Config()
    cfg.lapo.encoder_scale, cfg.lapo.encoder_num_res_blocks, cfg.lapo.frame_stack = 1, 0, 1
    cfg.lapo.act_head_dim = cfg.lapo.obs_head_dim = cfg.lapo.latent_action_dim = 4
    models = train_laom_labels.build_models(cfg, Shapes(act_dim=6, state_dim=17, img_hw=16), "lam", "probes")
    for name in ("lam", "probes"):
        assert list(saved["objects"][name]) == list(models[name].state_dict()), name
    assert saved["done"] and saved["step"] == 9


def test_a_finished_lam_of_the_previous_version_is_reused(previous, monkeypatch, capfd):
    run(monkeypatch, "reuse", f"--lapo.checkpoint_path={previous / 'finished' / 'lam.pt'}")
    out = capfd.readouterr()
    loaded = f"lapo: loaded the finished stage from {previous / 'finished' / 'lam.pt'}, not trained here"
    assert loaded in out.out + out.err
    res = json.loads((previous / "reuse" / "results.json").read_text())
    assert res["metrics"]["lapo/trained_updates"] == 0 and res["metrics"]["lapo/updates"] == 9
    assert numbers(previous / "reuse") == numbers(previous / "finished")


def test_an_unfinished_stage_of_the_previous_version_resumes(previous, monkeypatch, capfd):
    run(monkeypatch, "unfinished")
    out = capfd.readouterr()
    assert f"lapo: resuming from update 3 of 9 ({Path('unfinished') / 'lam.pt'})" in out.out + out.err
    res = json.loads((previous / "unfinished" / "results.json").read_text())
    assert res["metrics"]["lapo/trained_updates"] == 9 and not res["stages"]["lapo"]["skipped"]
    # Resumed where it stopped, it gives the numbers of the uninterrupted run.
    assert numbers(previous / "unfinished") == numbers(previous / "finished")
