"""fp32 against bf16 autocast on this machine, side by side in one process: train_laom's own stage 1 with the
networks, batch and augmentations of configs/example/laom.yaml, timed by scripts.bench.timing in alternating blocks
(fp32 then bf16, then bf16 then fp32, ...), so that a shared machine's drifting speed falls on both alike. Prints the
median seconds per update of each and the median bf16 / fp32 ratio of the pairs (docs/FAITHFULNESS.md, "Precision
on the CPU").

    python -m scripts.bench.precision --threads=1 --pairs=8
"""

import statistics
from dataclasses import dataclass

import pyrallis
import torch

import train_laom
from scripts.bench.timing import time_stage


@dataclass
class PrecisionBenchConfig:
    laom_config: str = "configs/example/laom.yaml"  # the LAOM config whose stage-1 networks and batch are timed
    threads: int = 1  # torch CPU threads
    pairs: int = 8  # (fp32 block, bf16 block) pairs timed
    updates: int = 4  # updates per block (each block's stage warms up for as many first)
    device: str = "cpu"  # cpu or cuda


def main(cfg: PrecisionBenchConfig) -> None:
    torch.set_num_threads(cfg.threads)
    c = pyrallis.parse(train_laom.Config, config_path=cfg.laom_config, args=[]).lapo
    args = [f"--lapo.num_epochs={10**6}"]  # as many updates as the blocks need

    def block(precision: str) -> float:  # seconds per update of one block of the stage
        device = torch.device(cfg.device)
        spu, _, _ = time_stage("laom/lam", c.data_path, device, False, None, cfg.updates, 1, False,
                               config=cfg.laom_config, args=args, precision=precision)  # fmt: skip
        return spu

    seconds, ratios = {"fp32": [], "bf16": []}, []
    for i in range(cfg.pairs):
        for precision in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
            seconds[precision].append(block(precision))
        ratios.append(seconds["bf16"][-1] / seconds["fp32"][-1])
    fp32, bf16 = statistics.median(seconds["fp32"]), statistics.median(seconds["bf16"])
    print(f"{cfg.threads} thread(s), {c.batch_size} samples per update: fp32 {fp32:.4f} s, bf16 {bf16:.4f} s (medians)")
    print(f"bf16 / fp32 per pair: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main(pyrallis.parse(config_class=PrecisionBenchConfig))
