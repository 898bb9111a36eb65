"""The closed-form ridge probe (src/probes.py): its solution, its split, its metrics in a LAM run, the leakage probes
and the probe of the initialised network."""

import math

import h5py
import numpy as np
import pytest
import torch

from src import probes
from src.data import load_dataset
from src.probes import (
    PCA_DIMS,
    SHARE_L2_GRID,
    Moments,
    ProbeCurve,
    held_out_cca,
    leakage_targets,
    pair_indices,
    ridge_probe,
    split_trajectories,
)

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


def write_synthetic(path, num_traj=6, steps=40, seed=0) -> dict:
    """A small dataset in the collector's layout with a distractors/ group of known random walks."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for k, v in dict(domain_name="cheetah", task_name="run", difficulty="scale_easy_video_hard", dynamic=True,
                         img_hw=8).items():  # fmt: skip
            f.attrs[k] = v
        for i in range(num_traj):
            g = f.create_group(str(i))
            g["obs"] = rng.integers(0, 255, (steps, 8, 8, 3), dtype=np.uint8)
            g["actions"] = rng.normal(size=(steps, 2)).astype(np.float32)
            g["states"] = np.cumsum(rng.normal(size=(steps, 3)), 0).astype(np.float32)
            d = g.create_group("distractors")
            direction = rng.choice([-1.0, 1.0])
            d["background"] = np.stack([np.full(steps, 4.0), 50 + direction * np.arange(steps),
                                        np.full(steps, direction)], 1).astype(np.float32)  # fmt: skip
            d["camera"] = np.cumsum(rng.normal(size=(steps, 6)), 0).astype(np.float32)
            d["color"] = np.cumsum(rng.normal(size=(steps, 9)), 0).astype(np.float32)
    return {"num_traj": num_traj, "steps": steps}


def probe_with(labeler_of_rows, data, **kwargs):
    """ridge_probe with a labeler that sees the global frame indices of the batch (through data.batch)."""
    seen = {}
    orig_batch = data.batch

    def batch(idx, *args, **kw):
        seen["idx"] = idx
        return orig_batch(idx, *args, **kw)

    data.batch = batch
    try:
        return ridge_probe(lambda o, n: labeler_of_rows(seen["idx"]), data, 1, 32, torch.device("cpu"), 10**6, **kwargs)
    finally:
        del data.batch


def test_leakage_probes_recover_a_known_linear_signal_and_nothing_else(tmp_path):
    """A latent that holds (a linear map of) the camera's change gives camera R² ~1 and ~0 for the other
    distractors; one that holds the action gives action R² ~1 (= 1 - relative MSE); the update-0 style keys and
    the background advance are there."""
    path = tmp_path / "synthetic.hdf5"
    write_synthetic(path)
    data = load_dataset(str(path), "cpu", 1, load_states=False)
    extra, columns = leakage_targets(data)
    assert list(columns) == ["agent_state", "background", "camera", "color"]
    assert [len(c) for c in columns.values()] == [3, 1, 6, 9]
    cam = extra[:, columns["camera"]]
    mix = torch.randn(6, 12, generator=torch.Generator().manual_seed(0))
    camera_latent = probe_with(lambda idx: (cam[idx] @ mix).double() + 5.0, data)
    assert camera_latent["lapo/leakage/camera_r2"] > 0.999
    for other in ("color", "agent_state", "action"):
        assert abs(camera_latent[f"lapo/leakage/{other}_r2"]) < 0.3, other
    action_latent = probe_with(lambda idx: data.actions[idx].double() * 3, data)
    rel = action_latent["lapo/ridge_probe_mse"] / action_latent["lapo/ridge_probe_baseline_mse"]
    assert action_latent["lapo/leakage/action_r2"] > 0.999 and rel < 1e-3
    # the background target is the frame advance: +-1 per trajectory, so a latent of the direction decodes it
    direction = extra[:, columns["background"]]
    bg = probe_with(lambda idx: direction[idx].double(), data)
    assert bg["lapo/leakage/background_val_r2"] > 0.99 or math.isnan(bg["lapo/leakage/background_val_r2"])


def test_share_of_the_latent_the_agent_explains_against_a_known_mix(tmp_path):
    """A latent made of the actions (mixed linearly) beside as much independent noise: the agent explains about
    half of its variance, the distractors about none; a latent of the camera's change is all distractor."""
    path = tmp_path / "synthetic.hdf5"
    write_synthetic(path, num_traj=10, steps=200)
    data = load_dataset(str(path), "cpu", 1, load_states=False)
    extra, columns = leakage_targets(data)
    gen = torch.Generator().manual_seed(1)
    agent = data.actions.double() @ torch.randn(2, 8, generator=gen, dtype=torch.float64)
    noise = torch.randn(len(agent), 8, generator=gen, dtype=torch.float64)
    noise *= agent.std(0).pow(2).sum().sqrt() / noise.std(0).pow(2).sum().sqrt()  # the same total variance
    half = probe_with(lambda idx: torch.cat([agent[idx], noise[idx]], 1), data)
    assert 0.4 < half["lapo/leakage/latent_from_agent_r2"] < 0.6
    assert abs(half["lapo/leakage/latent_from_distractors_r2"]) < 0.1
    only_agent = probe_with(lambda idx: agent[idx] + 3.0, data)
    assert only_agent["lapo/leakage/latent_from_agent_r2"] > 0.999
    cam = extra[:, columns["camera"]].double()
    camera_latent = probe_with(lambda idx: cam[idx] @ torch.randn(6, 5, generator=torch.Generator().manual_seed(2),
                                                                    dtype=torch.float64), data)  # fmt: skip
    assert camera_latent["lapo/leakage/latent_from_distractors_r2"] > 0.99
    assert abs(camera_latent["lapo/leakage/latent_from_agent_r2"]) < 0.1
    # the held-out canonical correlations, in the same pass: the agent's mixed into half noise is still read
    # whole (the actions are 2 of the agent's targets' columns), the camera's latent holds no agent
    assert half["lapo/leakage/cca_agent_top1"] > 0.99 and half["lapo/leakage/cca_distractors"] < 0.05
    assert camera_latent["lapo/leakage/cca_distractors_top1"] > 0.99 and camera_latent["lapo/leakage/cca_agent"] < 0.05


def _agent_latent(n: int, free: int, scale: float, rng: np.random.Generator):
    """Synthetic transitions: 8 agent targets y, a latent of 16 noisy linear read-outs of them beside `free`
    agent-free dimensions (independent of y) of spread `scale`."""
    y = rng.normal(size=(n, 8))
    mix = np.random.default_rng(1).normal(size=(8, 16))
    agent = y @ mix + 2.0 * rng.normal(size=(n, 16))
    m = Moments()
    m.add(torch.tensor(np.concatenate([agent, scale * rng.normal(size=(n, free))], 1)), torch.tensor(y))
    return m


def _both_measures(free: int, scale: float, per_dim=None) -> tuple[float, float]:
    """(held-out CCA score, the agent share of the latent's variance) of the synthetic latent: fit 3000
    transitions, validation 750, test 3000, the same draws for every `free` / `scale` / rescaling."""
    rng = np.random.default_rng(0)
    sets = [_agent_latent(n, free, scale, rng) for n in (3000, 750, 3000)]
    if per_dim is not None:  # z -> z * per_dim, dimension by dimension, in the sums
        for m in sets:
            d = torch.as_tensor(per_dim, dtype=torch.float64)
            s = m.sums
            s["z"], s["zz"], s["za"] = s["z"] * d, s["zz"] * torch.outer(d, d), s["za"] * d[:, None]
    fit, val, test = sets
    cols = list(range(8))
    shares = [val.explained(fit, cols, l2) for l2 in SHARE_L2_GRID]
    share = test.explained(fit, cols, SHARE_L2_GRID[probes._best(shares)])
    return held_out_cca(fit, val, test, cols)["cca"], share


def test_held_out_cca_is_invariant_to_rescaling_and_to_agent_free_dimensions_where_the_share_is_not():
    """The issue's failure of the agent share: the same agent content beside 112 agent-free dimensions scaled by 0.1,
    1 and 10, or beside 1008 of them, moves the share by orders of magnitude. The held-out canonical correlation
    gives exactly the same number under any per-dimension rescaling (its fit standardises every dimension), and
    agent-free dimensions only add estimation noise: 112 of them change it by under 0.01 (and never raise it),
    1008 with 3000 fit transitions lower it by about a sixth (a finite-sample bias against wide latents that the
    report cancels by reading changes from update 0 within one architecture)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 1024-wide eigendecomposition: many threads on a shared machine only contend
    try:
        _check_invariance()
    finally:
        torch.set_num_threads(threads)


def _check_invariance():
    cca, share = zip(*(_both_measures(112, s) for s in (0.1, 1.0, 10.0)), strict=True)
    assert share[0] > 0.5 and share[2] < 0.01 and share[0] / share[2] > 50  # the share: scale, not content
    assert max(cca) - min(cca) < 1e-9 and cca[0] > 0.6  # CCA: the same number at every scale
    per_dim = np.random.default_rng(3).lognormal(0, 2, size=128)  # any per-dimension rescaling, agent dims too
    assert _both_measures(112, 1.0, per_dim)[0] == pytest.approx(cca[1], abs=1e-9)
    alone, share_alone = _both_measures(0, 1.0)
    assert 0 <= alone - cca[1] < 0.01  # 112 agent-free dimensions: estimation noise only
    wide, share_wide = _both_measures(1008, 1.0)
    assert 0.8 * alone < wide <= alone  # 1008 of them with 3000 transitions: a sixth lower, never higher
    assert share_wide < 0.2 * share_alone  # the share falls 7-fold
    # nothing to find: a latent of noise only scores ~0; the targets themselves (mixed, plus noise) score ~1
    rng = np.random.default_rng(5)
    fit, val, test = (_agent_latent(n, 64, 1.0, rng) for n in (3000, 750, 3000))
    noise_only = list(range(16, 80))
    for m in (fit, val, test):
        s = m.sums
        s["z"], s["zz"], s["za"] = s["z"][noise_only], s["zz"][noise_only][:, noise_only], s["za"][noise_only]
    assert held_out_cca(fit, val, test, list(range(8)))["cca"] < 0.02
    y, mix = rng.normal(size=(4000, 8)), rng.normal(size=(8, 8)) * np.arange(1, 9)
    z = y @ mix + 0.01 * rng.normal(size=(4000, 8))
    m = [Moments() for _ in range(3)]
    for i, part in enumerate((slice(0, 2000), slice(2000, 2500), slice(2500, 4000))):
        m[i].add(torch.tensor(z[part]), torch.tensor(y[part]))
    assert held_out_cca(*m, list(range(8)))["cca"] > 0.99


def test_leakage_targets_not_recorded_on_files_without_the_group(capsys):
    """The released files have no distractors/ group: the action and agent-state targets only, with a note."""
    data = load_dataset(EXAMPLE, "cpu", 3, load_states=False)
    probes._LEAKAGE_CACHE.clear()  # the note comes once per file and process: an earlier test may have read it
    out = ridge_probe(lambda o, n: o.flatten(1)[:, :8].float(), data, 3, 64, torch.device("cpu"), 300)
    assert "does not record background, camera, color" in capsys.readouterr().out
    assert "lapo/leakage/agent_state_r2" in out and "lapo/leakage/action_r2" in out
    assert not any(k.startswith(("lapo/leakage/camera", "lapo/leakage/color")) for k in out)
    off = ridge_probe(lambda o, n: o.flatten(1)[:, :8].float(), data, 3, 64, torch.device("cpu"), 300, leakage=False)
    assert not any("leakage" in k for k in off)
    assert off["lapo/ridge_probe_mse"] == pytest.approx(out["lapo/ridge_probe_mse"], rel=1e-9)  # same action probe


def test_probe_on_principal_components_and_the_update_zero_probe_in_the_curve(tmp_path):
    """Latents wider than PCA_DIMS also get the probe on their top components; ProbeCurve keeps the whole probe of
    update 0 (resumable, and readable from the earlier list-only file)."""
    data = load_dataset(EXAMPLE, "cpu", 3, load_states=False)
    wide = ridge_probe(lambda o, n: o.flatten(1)[:, : PCA_DIMS + 20].float(), data, 3, 64, torch.device("cpu"), 400)
    narrow = ridge_probe(lambda o, n: o.flatten(1)[:, :PCA_DIMS].float(), data, 3, 64, torch.device("cpu"), 400)
    assert f"lapo/ridge_probe_pca{PCA_DIMS}_mse" in wide and f"lapo/ridge_probe_pca{PCA_DIMS}_mse" not in narrow

    class Stage:
        done, start, total = False, 0, 10

    module = torch.nn.Linear(1, 1)
    calls = []
    probe = lambda: calls.append(1) or {"lapo/ridge_probe_val_mse": 2.0, "lapo/ridge_probe_mse": 3.0,  # noqa: E731
                                       "lapo/leakage/camera_r2": 0.5, "lapo/leakage/camera_val_r2": 0.4}  # fmt: skip
    curve = ProbeCurve(tmp_path / "c.json", every=0)  # no curve: the update-0 probe all the same
    curve.before_training(Stage, module, probe)
    assert curve.init_metrics() == {
        "lapo/init/ridge_probe_val_mse": 2.0,
        "lapo/init/ridge_probe_mse": 3.0,
        "lapo/init/leakage/camera_r2": 0.5,
        "lapo/init/leakage/camera_val_r2": 0.4,
    }
    assert curve.points({"lapo/ridge_probe_val_mse": 1.0, "lapo/ridge_probe_mse": 1.5}, 10) == []
    resumed = ProbeCurve(tmp_path / "c.json", every=0)
    assert resumed.init_metrics() == curve.init_metrics() and len(calls) == 1
    with_curve = ProbeCurve(tmp_path / "d.json", every=5)
    with_curve.before_training(Stage, module, probe)
    final = {"lapo/ridge_probe_val_mse": 1.0, "lapo/ridge_probe_mse": 1.5}
    assert with_curve.points(final, 10) == [[0, 2.0, 3.0, {"camera": 0.5}], [10, 1.0, 1.5]]
    (tmp_path / "old.json").write_text("[[0, 2.0, 3.0]]")  # the earlier format: points only
    assert ProbeCurve(tmp_path / "old.json", every=5).points(final, 10) == [[0, 2.0, 3.0], [10, 1.0, 1.5]]


def test_intervention_shares_in_the_action_probe_output_do_not_move_with_the_latent_scale():
    """studies/small/latent_sources.py: the shares of a latent's response summed over its dimensions move when the
    agent's dimensions are scaled (the issue: doubling them moved a 0.50 / 0.50 split); read through the
    cross-fitted action probe, they do not."""
    from studies.small.latent_sources import action_readout, moved

    rng = np.random.default_rng(0)
    n = 800
    actions = torch.tensor(rng.normal(size=(n, 3)))
    background = torch.tensor(rng.normal(size=(n, 4)))  # the background's change: no action in it
    agent = actions @ torch.tensor(rng.normal(size=(3, 4))) + 0.1 * torch.tensor(rng.normal(size=(n, 4)))
    still = torch.zeros(n, 8, dtype=torch.float64)

    def z(scale: float) -> dict[str, torch.Tensor]:  # 4 agent dims (scaled), 4 background dims
        full = torch.cat([scale * agent, background], 1)
        return {"full": full, "still": still, "background": torch.cat([scale * agent, 0 * background], 1),
                "agent": torch.cat([0 * agent, background], 1)}  # fmt: skip

    plain, doubled = moved(z(1.0)), moved(z(2.0))
    assert doubled["agent"] - plain["agent"] > 0.2  # summed over dimensions: the split follows the scale
    p1, p2 = moved(action_readout(z(1.0), actions)), moved(action_readout(z(2.0), actions))
    for k in ("step", "background", "agent"):
        assert p1[k] == pytest.approx(p2[k], abs=1e-9), k
    assert p1["agent"] > 0.9 and p1["background"] < 0.05  # in action space the step's response is the agent's
