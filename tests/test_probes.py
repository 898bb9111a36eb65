"""The closed-form ridge probe (src/probes.py): its solution, its split, and its metrics in a LAM run."""

import numpy as np
import pytest
import torch

from src.data import load_dataset
from src.probes import Moments, pair_indices, ridge_probe, split_trajectories

EXAMPLE = "data/example-data.hdf5"


def test_ridge_solution_and_its_error_from_sums_match_least_squares_with_intercept():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 7)) * np.array([1, 2, 3, 0.5, 1, 1, 4]) + 3.0
    w_true, b_true = rng.normal(size=(7, 2)), np.array([1.5, -2.0])
    a = z @ w_true + b_true + 0.1 * rng.normal(size=(500, 2))
    fit = Moments()
    for part in np.array_split(np.arange(500), 3):  # sums over batches = one fit over all
        fit.add(torch.tensor(z[part]), torch.tensor(a[part]))
    (w, b), (w_ridge, _) = fit.ridge_path([0.0, 10.0])
    x = np.hstack([z, np.ones((500, 1))])
    sol = np.linalg.lstsq(x, a, rcond=None)[0]
    np.testing.assert_allclose(w.numpy(), sol[:7], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b.numpy(), sol[7], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.mean_action().numpy(), a.mean(0))
    assert w_ridge.norm() < 0.5 * w.norm()  # the penalty shrinks the weights towards zero
    # The squared error computed from the sums equals the one computed from the samples, for any (W, b).
    z2, a2 = rng.normal(size=(300, 7)), rng.normal(size=(300, 2)) * 3
    test = Moments()
    test.add(torch.tensor(z2), torch.tensor(a2))
    for ww, bb in ((w, b), (w_ridge, b * 0 + 1), (torch.zeros_like(w), torch.tensor(a2.mean(0)))):
        direct = ((a2 - z2 @ ww.numpy() - bb.numpy()) ** 2).mean()
        assert test.mse(ww, bb) == pytest.approx(direct, rel=1e-9)


def test_split_holds_out_whole_trajectories_and_subsamples_without_touching_the_global_rng():
    data = load_dataset(EXAMPLE, "cpu", 3, load_states=False)
    fit, val, test = split_trajectories(data)
    n = data.num_trajectories
    assert test == [n - 1] and val == [n - 2] and fit == list(range(n - 2))
    state = torch.get_rng_state()
    idx = pair_indices(data, fit, max_samples=50, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert len(idx) == 50 and torch.equal(idx, pair_indices(data, fit, max_samples=50, seed=0))
    traj_of = torch.bucketize(idx, data.traj_starts, right=True) - 1
    assert set(traj_of.tolist()) <= set(fit)
    last = data.traj_starts[traj_of] + data.traj_lens[traj_of] - 1
    assert (idx < last).all()  # every o_t has its o_{t+1} in the same trajectory
    all_test = pair_indices(data, test, max_samples=10**6, seed=1)
    assert len(all_test) == int(data.traj_lens[-1]) - 1


def test_probe_finds_actions_in_a_latent_that_holds_them_and_nothing_in_noise():
    """A labeler that reads the true actions gives MSE ~0; one that returns noise gives the baseline."""
    data = load_dataset(EXAMPLE, "cpu", 3, load_states=False)
    lookup = {}

    def oracle(obs, next_obs):  # the latent is the action itself (found by the frame it was taken at)
        return lookup["a"]

    def noise(obs, next_obs):
        return torch.randn(len(obs), 16, generator=torch.Generator().manual_seed(len(obs)))

    orig_batch = data.batch

    def batch(idx, *args, **kwargs):
        b = orig_batch(idx, *args, **kwargs)
        lookup["a"] = b["actions"]
        return b

    data.batch = batch
    try:
        good = ridge_probe(oracle, data, 3, 64, torch.device("cpu"), 2000)
        bad = ridge_probe(noise, data, 3, 64, torch.device("cpu"), 2000)
    finally:
        del data.batch
    assert good["lapo/ridge_probe_mse"] < 1e-4 * good["lapo/ridge_probe_baseline_mse"]
    assert bad["lapo/ridge_probe_mse"] > 0.9 * bad["lapo/ridge_probe_baseline_mse"]
    assert good["lapo/action_variance"] == pytest.approx(data.actions.double().var(0, unbiased=False).mean().item())


def test_two_trajectories_are_too_few_and_the_probe_is_skipped_with_a_note(capsys):
    data = load_dataset(EXAMPLE, "cpu", 3, load_states=False, max_trajectories=2)
    with pytest.raises(ValueError, match="example-data.hdf5.*at least 3; it has 2"):
        split_trajectories(data)
    assert ridge_probe(lambda o, n: o.flatten(1)[:, :4], data, 3, 64, torch.device("cpu"), 100) == {}
    assert "ridge probe skipped: data/example-data.hdf5 holds fewer than 3 trajectories" in capsys.readouterr().out
    full = load_dataset(EXAMPLE, "cpu", 3, load_states=False)
    assert ridge_probe(lambda o, n: o.flatten(1)[:, :4], full, 3, 64, torch.device("cpu"), 0) == {}  # switched off
