"""One definition for each shared helper and constant: state flattening, the paper's environment list, the
normalised score. Where a copy must stay (bash defaults, the Table 3 rows), these tests check that it agrees."""

import re
from pathlib import Path

import numpy as np
import pytest

from scripts import plot_results
from scripts.data.make_cross_embodied import Config as MixConfig
from scripts.data.make_cross_embodied import source_paths
from scripts.data_collection import experts
from src.dcs.constants import PAPER_ENVS
from src.envs import flatten_state
from src.evaluation import NORMALIZING_RETURNS, normalized_score

ROOT = Path(__file__).resolve().parents[1]


def test_expert_state_env_uses_the_project_flattening():
    assert not hasattr(experts, "flatten_state")  # no second copy
    for dtype in (np.float32, np.float64):  # PPO trains on float32 states, SAC on float64
        env = experts.DMCStateEnv("walker", "walk", dtype=dtype)
        state, _ = env.reset(seed=3)
        observation = env._env.task.get_observation(env._env.physics)
        assert state.dtype == dtype and env.observation_space.dtype == dtype
        np.testing.assert_array_equal(state, flatten_state(observation, dtype))
    assert flatten_state({"b": np.ones(2), "a": np.zeros((1, 2))}).tolist() == [0, 0, 1, 1]  # keys sorted
    assert flatten_state({"a": np.ones(1)}).dtype == np.float32  # what make_env reports and collectors store


def test_paper_envs_are_defined_once():
    assert PAPER_ENVS == ("cheetah-run", "walker-run", "hopper-hop", "humanoid-walk")
    assert tuple(NORMALIZING_RETURNS) == PAPER_ENVS  # Table 3 has a row for each, in the same order
    paths = source_paths(MixConfig(target_env="walker-run", data_dir="d"))
    assert [p.name for p in paths] == ["cheetah-run.hdf5", "hopper-hop.hdf5", "humanoid-walk.hdf5"]
    from scripts.fidelity import compare_render_versions

    assert not hasattr(compare_render_versions, "TASKS")


def test_sweep_default_envs_equal_paper_envs():
    defaults = {}
    for script in sorted((ROOT / "scripts" / "sweeps").glob("*.sh")):
        for match in re.finditer(r"\$\{ENVS:-\"?([a-z_\- ]+?)\"?\}", script.read_text()):
            defaults.setdefault(script.name, []).append(tuple(match[1].split()))
    assert set(defaults) == {"common.sh", "cross_embodied.sh"}
    for name, lists in defaults.items():
        assert lists == [PAPER_ENVS], name


@pytest.mark.parametrize("setting,column", [("distractors", "distractors"), ("vanilla", "vanilla")])
def test_report_scores_a_return_with_the_evaluation_function(setting, column):
    attrs = plot_results.score_attrs("hopper-hop", setting)
    assert normalized_score(attrs, 126.5) == pytest.approx(126.5 / NORMALIZING_RETURNS["hopper-hop"][column])
    assert normalized_score(plot_results.score_attrs("example-data", setting), 1.0) is None  # not a paper env


def stage_source(module, name: str) -> str:
    """A stage function's source with the names that legitimately differ between the scripts (the LAM's class)
    replaced by a placeholder."""
    import inspect

    source = inspect.getsource(getattr(module, name))
    return re.sub(r"\blam: \w+\)", "lam: LAM)", source)


@pytest.mark.parametrize("stage", ["train_latent_bc", "train_decoder"])
def test_latent_bc_and_decoder_copies_do_not_drift(stage):
    """Stages 2 and 3 are repeated in train_lapo.py, train_lapo_mask.py, train_laom.py and train_laom_labels.py on
    purpose (each file shows its whole method); the copies must stay identical."""
    import train_laom
    import train_laom_labels
    import train_lapo
    import train_lapo_mask

    modules = (train_lapo, train_lapo_mask, train_laom, train_laom_labels)
    sources = {m.__name__: stage_source(m, stage) for m in modules}
    assert len(set(sources.values())) == 1, f"{stage} differs between {list(sources)}"
    assert "stage.updates()" in sources["train_lapo"]  # the helper runs the loop (src/stage.py)


@pytest.mark.parametrize("name", ["Quantizer", "LatentIDM", "LatentFDM", "LAPO", "build_lam"])
def test_masked_lapo_networks_are_train_lapos(name):
    """train_lapo_mask.py repeats LAPO's networks so that it reads alone; they must stay train_lapo.py's."""
    import inspect

    import train_lapo
    import train_lapo_mask

    assert inspect.getsource(getattr(train_lapo_mask, name)) == inspect.getsource(getattr(train_lapo, name))
