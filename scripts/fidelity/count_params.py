"""Parameter counts of every method's networks at the paper's configs (paper Table 4), built on the meta device
(nothing allocated or initialised). Prints one line per network, then Table 4's five numbers in its order (LAPO, LAOM,
LAOM + supervision, IDM, BC actor with 8192 outputs); the paper's are 211847849, 192307136, 192479189, 192258965 and
107541504.

    python -m scripts.fidelity.count_params               # humanoid-walk shapes: A = 21, S = 67, 64 px, 3 frames
    python -m scripts.fidelity.count_params --act_dim 6 --state_dim 17
"""

import argparse
import importlib
import json
from pathlib import Path

import pyrallis
import torch

from src.data import Shapes
from src.nn import num_params

# (label in Table 4, script, paper config, network of build_models that Table 4 counts)
TABLE4 = (
    ("LAPO", "train_lapo", "configs/lapo.yaml", "lam"),
    ("LAOM", "train_laom", "configs/laom.yaml", "lam"),
    ("LAOM+supervision", "train_laom_labels", "configs/laom-labels.yaml", "lam"),
    ("IDM", "train_idm", "configs/idm.yaml", "idm"),
    ("BC (latent actor, 8192 outputs)", "train_laom", "configs/laom.yaml", "actor"),
)


def count_all(act_dim: int, state_dim: int, img_hw: int) -> dict[str, dict[str, int]]:
    """{script: {network: parameters}} for every network each script builds at its paper config."""
    counts = {}
    for script, config_path in sorted({(s, c) for _, s, c, _ in TABLE4} | {("train_bc", "configs/bc.yaml")}):
        module = importlib.import_module(script)
        cfg = pyrallis.parse(config_class=module.Config, config_path=config_path, args=[])
        with torch.device("meta"):
            models = module.build_models(cfg, Shapes(act_dim, state_dim, img_hw))  # the networks the stages train
        counts[script] = {name: num_params(m) for name, m in models.items()}
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--act_dim", type=int, default=21, help="action size (humanoid-walk: 21)")
    parser.add_argument("--state_dim", type=int, default=67, help="proprioceptive state size (humanoid-walk: 67)")
    parser.add_argument("--img_hw", type=int, default=64, help="frame size in pixels")
    parser.add_argument("--json", default=None, help="also write the counts to this JSON file")
    args = parser.parse_args()
    counts = count_all(args.act_dim, args.state_dim, args.img_hw)
    for script, nets in counts.items():
        for name, n in nets.items():
            print(f"{script:<20} {name:<10} {n:>12,}")
    print("\nTable 4 (paper): parameters")
    for label, script, _, net in TABLE4:
        print(f"{label:<34} {counts[script][net]}")
    if args.json:
        Path(args.json).write_text(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
