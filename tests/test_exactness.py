"""Exactness as a property of every run: a run interrupted anywhere (mid-stage, after a stage's last update, during
its final probes or evaluation, between stages) and run again, a rerun whose stages are all skipped, and a run that
loads stages from another run's checkpoints give, bit for bit, the results.json numbers of the uninterrupted run
with the same config and seed (wall times aside). The example config of train_lapo.py, made tinier on the command
line; interruptions are real signals sent by the stage's test hook (LAOM_INTERRUPT_AT, src/stage.py) at a named
point, never after a time. Runs are in-process: each rerun reads only what the interrupted one left on disk."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import train_lapo
from src.run import main
from src.stage import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example-data.hdf5"
pytestmark = pytest.mark.skipif(not EXAMPLE.exists(), reason="needs the example dataset")


def lapo_args(run_dir: Path, *extra: str) -> list[str]:
    """configs/example/lapo.yaml, tinier: 16 LAM updates, 6 latent-BC updates, 6 decoder updates and one 10-step
    evaluation episode; log and checkpoint windows that do not divide the stages (a resumed loss window must carry
    over)."""
    tiny = ["--lapo.max_trajectories=3", "--lapo.batch_size=16", "--lapo.ridge_probe_samples=200"]
    tiny += ["--bc.max_trajectories=1", "--bc.batch_size=16", "--bc.eval_episodes=0"]
    tiny += ["--decoder.max_trajectories=1", "--decoder.total_updates=6", "--decoder.batch_size=16"]
    tiny += ["--eval_max_episode_steps=10", "--log_every=4", "--checkpoint_every=100"]
    run = [f"--run_dir={run_dir}", "--wandb_mode=disabled", "--device=cpu"]
    return [f"--config_path={ROOT / 'configs/example/lapo.yaml'}", *run, *tiny, *extra]


def run(run_dir: Path, monkeypatch, *extra: str, interrupt: str | None = None) -> int:
    """The script as from the command line (src.run.main); its exit code (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", ["train_lapo", *lapo_args(run_dir, *extra)])
    if interrupt:
        monkeypatch.setenv("LAOM_INTERRUPT_AT", interrupt)
    else:
        monkeypatch.delenv("LAOM_INTERRUPT_AT", raising=False)
    try:
        main(train_lapo.train)
    except SystemExit as e:
        return e.code
    return 0


def numbers(run_dir: Path, ignore: tuple = ()) -> str:
    """results.json's stages and metrics without wall times and skip flags (and the keys in `ignore`), as JSON text:
    compared bit for bit (floats round-trip, NaN equals NaN)."""
    res = json.loads((run_dir / "results.json").read_text())
    drop = {"seconds", "skipped", *ignore}
    stages = {name: {k: v for k, v in entry.items() if k not in drop} for name, entry in res["stages"].items()}
    metrics = {k: v for k, v in res["metrics"].items() if k not in drop}
    return json.dumps({"stages": stages, "metrics": metrics}, sort_keys=True, indent=1)


def step_of(path: Path) -> tuple[int, bool]:
    state = torch.load(path, weights_only=False)
    return state["step"], state["done"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("exact") / "baseline"
    with pytest.MonkeyPatch.context() as mp:
        assert run(run_dir, mp) == 0
    m = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert m["lapo/updates"] == m["lapo/trained_updates"] == 16 and "lapo/final_train_loss" in m
    assert "decoder/eval_returns_mean" in m and "lapo/init/ridge_probe_mse" in m
    return run_dir


def test_a_run_interrupted_anywhere_and_rerun_gives_the_uninterrupted_numbers(baseline, tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "run"
    # Ctrl-C mid-stage, before its first periodic checkpoint: the stage is checkpointed after update 3, and says so.
    assert run(run_dir, monkeypatch, interrupt="lapo:3") == INTERRUPTED_EXIT_CODE
    assert step_of(run_dir / "lam.pt") == (3, False)
    last = capfd.readouterr().err.rstrip().splitlines()[-1]
    assert last == (
        f"lapo: stopped after update 3 of 16 on Ctrl-C; run the same command again to resume from there "
        f"({run_dir / 'lam.pt'})"
    )
    # After the stage's last update, its final checkpoint written and its final metrics not.
    assert run(run_dir, monkeypatch, interrupt="lapo:trained") == INTERRUPTED_EXIT_CODE
    assert step_of(run_dir / "lam.pt") == (16, True) and not (run_dir / "lam.metrics.json").exists()
    # During its final probes: they are drawn again on the rerun, from the same random state.
    assert run(run_dir, monkeypatch, interrupt="lapo:final") == INTERRUPTED_EXIT_CODE
    assert not (run_dir / "lam.metrics.json").exists()
    # Between stages.
    assert run(run_dir, monkeypatch, interrupt="lapo:end") == INTERRUPTED_EXIT_CODE
    assert (run_dir / "lam.metrics.json").exists() and not (run_dir / "latent_bc.pt").exists()
    # Preempted (SIGTERM) after latent BC's last update: the stage is finished, its final metrics are not.
    assert run(run_dir, monkeypatch, interrupt="bc:6:SIGTERM") == PREEMPTED_EXIT_CODE
    assert step_of(run_dir / "latent_bc.pt") == (6, True) and not (run_dir / "latent_bc.metrics.json").exists()
    assert "bc: stopped after update 6 of 6 on signal SIGTERM" in capfd.readouterr().err
    # Mid-stage in the decoder (its epochs keep their last partial batch), then during its evaluation.
    assert run(run_dir, monkeypatch, interrupt="decoder:3") == INTERRUPTED_EXIT_CODE
    assert step_of(run_dir / "decoder.pt") == (3, False)
    assert run(run_dir, monkeypatch, interrupt="decoder:final") == INTERRUPTED_EXIT_CODE
    assert not (run_dir / "decoder.metrics.json").exists()
    assert run(run_dir, monkeypatch) == 0
    assert numbers(run_dir) == numbers(baseline)


def test_a_rerun_whose_stages_are_all_skipped_gives_the_same_numbers(baseline, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(baseline, run_dir)
    assert run(run_dir, monkeypatch) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert all(res["stages"][name]["skipped"] for name in ("lapo", "bc", "decoder"))
    assert numbers(run_dir) == numbers(baseline)
    (run_dir / "results.json").unlink()  # from the metrics stored beside the checkpoints
    assert run(run_dir, monkeypatch) == 0
    assert numbers(run_dir) == numbers(baseline)


def test_stages_reused_from_another_run_give_the_numbers_of_the_full_run(baseline, tmp_path, monkeypatch):
    # The LAM of the baseline: latent BC and the decoder train here as they did there.
    run(tmp_path / "lam", monkeypatch, f"--lapo.checkpoint_path={baseline / 'lam.pt'}")
    assert numbers(tmp_path / "lam", ("lapo/trained_updates",)) == numbers(baseline, ("lapo/trained_updates",))
    m = json.loads((tmp_path / "lam" / "results.json").read_text())["metrics"]
    assert m["lapo/trained_updates"] == 0 and m["bc/trained_updates"] == 6  # loaded, not trained, here
    # LAM and latent BC of the baseline (the cheap way to a grid of label budgets): only the decoder trains.
    reused = [f"--lapo.checkpoint_path={baseline / 'lam.pt'}", f"--bc.checkpoint_path={baseline / 'latent_bc.pt'}"]
    run(tmp_path / "both", monkeypatch, *reused)
    ignore = ("lapo/trained_updates", "bc/trained_updates")
    assert numbers(tmp_path / "both", ignore) == numbers(baseline, ignore)


def test_a_resumed_data_stream_continues_the_uninterrupted_one():
    """infinite_epochs from batch k (a stage resumed after update k) yields what the stream from 0 yields after its
    first k batches, across epoch boundaries, whatever the global random state; each epoch is another permutation."""
    from src.data import load_dataset
    from src.stage import infinite_epochs

    data = load_dataset(str(EXAMPLE), "cpu", 3, min_offset=1, load_states=False, max_trajectories=1)
    valid = data.valid_indices(1)  # 99 transitions: 20 batches of 16 span three epochs
    assert len(valid) == 99
    whole = infinite_epochs(data, valid, 16, seed=7)
    first = [next(whole) for _ in range(20)]
    for k in (0, 5, 6, 13):
        torch.manual_seed(k)
        resumed = infinite_epochs(data, valid, 16, seed=7, start=k)
        assert all(torch.equal(next(resumed), b) for b in first[k:])
    assert not all(torch.equal(a, b) for a, b in zip(first[:6], first[6:12], strict=True))  # two epochs differ


@pytest.mark.parametrize("pair", [("train_laom", "train_laom_labels"), ("train_lapo", "train_lapo_mask")])
def test_arms_with_one_seed_start_from_the_same_lam(pair):
    """Seeded from (seed, stage name), not from the method: LAOM and LAOM + supervision start from the same LAM (the
    supervised head is built last, after it), LAPO and masked LAPO from the same LAM."""
    from src.checkpoint import seed_stage
    from src.data import Shapes

    lams = []
    for name in pair:
        module = __import__(name)
        cfg = module.Config()
        cfg.lapo.encoder_scale, cfg.lapo.latent_action_dim = 1, 32
        for field in ("act_head_dim", "obs_head_dim"):
            if hasattr(cfg.lapo, field):
                setattr(cfg.lapo, field, 32)
        seed_stage(cfg.seed, "lapo")
        lams.append(module.build_models(cfg, Shapes(act_dim=6, state_dim=17, img_hw=64), "lam")["lam"].state_dict())
    first, second = lams
    shared = [k for k in first if k in second]
    assert len(shared) == len(first) and all(torch.equal(first[k], second[k]) for k in shared)


# ---------------------------------------------------------------- every script: its first stage, cut and resumed

LAM = ["--lam_only=true", "--lapo.max_trajectories=1", "--lapo.batch_size=16", "--lapo.ridge_probe_samples=0"]
FIRST_STAGES = {  # script: (example config, its first stage, arguments that end the run after it, tiny)
    "train_laom": ("laom", "lapo", [*LAM, "--lapo.eval_data_path=null"]),
    "train_laom_labels": ("laom-labels", "lapo", [*LAM, "--lapo.labeled_batch_size=8", "--lapo.eval_data_path=null"]),
    "train_lapo_mask": ("lapo-mask", "lapo", LAM),
    "train_idm": ("idm", "idm", ["--idm_only=true", "--idm.max_trajectories=1", "--idm.eval_data_path=null"]),
    "train_bc": ("bc", "bc", ["--bc.max_trajectories=1", "--bc.batch_size=16", "--bc.eval_episodes=0"]),
}


@pytest.mark.parametrize("script", FIRST_STAGES)
def test_every_script_resumes_its_first_stage_exactly(script, tmp_path, monkeypatch):
    """The mechanism is the same for all six scripts (src/stage.py, src/run.py): each one's first stage, stopped
    mid-stage and during its final metrics, gives the numbers of the uninterrupted stage."""
    config, stage, args = FIRST_STAGES[script]
    module = __import__(script)
    args = [f"--config_path={ROOT / 'configs/example' / config}.yaml", "--wandb_mode=disabled", "--device=cpu", *args]
    args += [f"--{stage}.total_updates=6"] if stage != "lapo" else []  # a LAM: an epoch of 1 trajectory, 5 updates
    args += ["--log_every=4", "--checkpoint_every=100"]

    def go(run_dir: Path, interrupt: str | None = None) -> int:
        monkeypatch.setattr(sys, "argv", [script, f"--run_dir={run_dir}", *args])
        monkeypatch.setenv("LAOM_INTERRUPT_AT", interrupt or "")
        try:
            main(module.train)
        except SystemExit as e:
            return e.code
        return 0

    assert go(tmp_path / "baseline") == 0
    assert go(tmp_path / "run", f"{stage}:3") == INTERRUPTED_EXIT_CODE
    assert go(tmp_path / "run", f"{stage}:final") == INTERRUPTED_EXIT_CODE
    assert go(tmp_path / "run") == 0
    assert numbers(tmp_path / "run") == numbers(tmp_path / "baseline")
