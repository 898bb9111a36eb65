"""The paper's configs build the paper's networks: parameter counts of Table 4, exactly."""

from scripts.fidelity.count_params import TABLE4, count_all

PAPER_TABLE4 = {
    "LAPO": 211_847_849,
    "LAOM": 192_307_136,
    "LAOM+supervision": 192_479_189,
    "IDM": 192_258_965,
    "BC (latent actor, 8192 outputs)": 107_541_504,
}


def test_table4_parameter_counts_at_paper_configs():
    counts = count_all(act_dim=21, state_dim=67, img_hw=64)  # humanoid-walk shapes
    got = {label: counts[script][net] for label, script, _, net in TABLE4}
    assert got == PAPER_TABLE4


def test_bc_baseline_actor_matches_latent_actor_encoder():
    counts = count_all(act_dim=21, state_dim=67, img_hw=64)
    # same encoder (scale 32), only the output layer differs: 1024 -> 21 instead of 1024 -> 8192
    assert counts["train_laom"]["actor"] - counts["train_bc"]["actor"] == 1024 * (8192 - 21) + (8192 - 21)
