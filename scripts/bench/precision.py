"""fp32 against bf16 autocast on this machine, side by side in one process: LAOM stage-1 updates with the networks,
batch and augmentations of configs/example/laom.yaml, in alternating blocks (fp32 then bf16, then bf16 then fp32,
...), so that a shared machine's drifting speed falls on both alike. Prints the median seconds per update of each and
the median bf16 / fp32 ratio of the pairs (docs/FAITHFULNESS.md, "Precision on the CPU").

    python -m scripts.bench.precision --threads=1 --pairs=8
"""

import copy
import statistics
import time
from dataclasses import dataclass

import pyrallis
import torch

import train_laom
from src.augs import Augmenter
from src.data import load_dataset
from src.optim import autocast, make_optimizer, setup_backends


@dataclass
class PrecisionBenchConfig:
    laom_config: str = "configs/example/laom.yaml"  # the LAOM config whose stage-1 networks and batch are timed
    threads: int = 1  # torch CPU threads
    pairs: int = 8  # (fp32 block, bf16 block) pairs timed
    updates: int = 4  # updates per block
    device: str = "cpu"  # cpu or cuda


def main(cfg: PrecisionBenchConfig) -> None:
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    run_cfg = pyrallis.parse(train_laom.Config, config_path=cfg.laom_config, args=[])
    c = run_cfg.lapo
    data = load_dataset(c.data_path, device, c.frame_stack, min_offset=c.future_obs_offset)
    valid = data.valid_indices(c.future_obs_offset)
    torch.manual_seed(0)
    models = train_laom.build_models(run_cfg, data.shapes, "lam", "probes")
    lam, probes = models["lam"].to(device), models["probes"].to(device)
    target_encoder = copy.deepcopy(lam.encoder).requires_grad_(False)
    optim, probe_optim = make_optimizer(lam, "adam", c.learning_rate), make_optimizer(probes, "adam", c.learning_rate)
    aug = Augmenter() if c.use_aug else None

    def block(precision: str) -> float:  # seconds per update of one block, as train_laom's stage-1 loop runs them
        setup_backends(device, precision)
        start = time.perf_counter()
        for _ in range(cfg.updates):
            idx = valid[torch.randint(0, len(valid), (c.batch_size,), device=valid.device)]
            obs, future_obs, next_obs, b = train_laom.stage1_batch(data, idx, c, aug)
            with autocast(device):
                z, e_t = lam.latent_action(obs, future_obs)
                pred = lam.predict_next(e_t, z)
                with torch.no_grad():
                    target = lam.encode(next_obs, target_encoder)
            loss = train_laom.temporal_consistency_loss(pred, target, c.cosine_loss)
            probe_losses = probes(z, e_t, b["actions"], b["states"])
            optim.zero_grad(set_to_none=True)
            probe_optim.zero_grad(set_to_none=True)
            (loss + sum(probe_losses.values())).backward()
            optim.step()
            probe_optim.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / cfg.updates

    block("fp32"), block("bf16")  # warm-up of each
    seconds, ratios = {"fp32": [], "bf16": []}, []
    for i in range(cfg.pairs):
        for precision in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
            seconds[precision].append(block(precision))
        ratios.append(seconds["bf16"][-1] / seconds["fp32"][-1])
    setup_backends(device, "auto")
    fp32, bf16 = statistics.median(seconds["fp32"]), statistics.median(seconds["bf16"])
    print(f"{cfg.threads} thread(s), {c.batch_size} samples per update: fp32 {fp32:.4f} s, bf16 {bf16:.4f} s (medians)")
    print(f"bf16 / fp32 per pair: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main(pyrallis.parse(config_class=PrecisionBenchConfig))
