"""One training stage of any method script (Stage.on_data, updates, log, final_metrics); stops: docs/RUNS.md."""

import contextlib
import itertools
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from src import dist
from src.checkpoint import restore_stage, save_stage, seed_stage, stage_seed
from src.data import check_batch_size, num_batches, place_frames, watch_frames
from src.errors import ConfigError
from src.files import write_json
from src.optim import make_scheduler

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
PREEMPTED_EXIT_CODE = 75  # sysexits EX_TEMPFAIL: stopped on a signal after a checkpoint; run again to resume
INTERRUPTED_EXIT_CODE = 130  # stopped on Ctrl-C after a checkpoint (128 + SIGINT, as a shell reports it)
_stop_signals: list[int] = []  # the stop signals received by this process while a stage trained


def _on_stop_signal(signum, frame) -> None:
    if signum == signal.SIGINT and signal.SIGINT in _stop_signals:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now, the stage's last checkpoint is kept
    _stop_signals.append(signum)


def interrupt_point(stage: str, point: str) -> None:
    at = os.environ.get("LAOM_INTERRUPT_AT", "").split(":")
    if at[:2] == [stage, point]:
        os.kill(os.getpid(), getattr(signal, at[2] if len(at) > 2 else "SIGINT"))


class NanGuard:
    """Tracks, without a host sync, the first update whose loss was not finite; `check` raises (at log steps)."""

    def __init__(self, stage: str, device: torch.device):
        self.stage = stage
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def check(self, last_good: Path | None = None) -> None:
        step = int(dist.any_rank(self.first_bad))
        if step >= 0:
            where = f"; the last good checkpoint is {last_good}" if last_good and last_good.exists() else ""
            raise FloatingPointError(f"{self.stage}: the loss became NaN or infinite at update {step}{where}")


def infinite_epochs(data, valid, batch_size: int, drop_last=True, flag="batch_size", seed=None, start: int = 0):
    """Index batches, epoch after epoch, from batch `start`; epoch e shuffled by seed + e (None: the global RNG)."""
    check_batch_size(flag, batch_size, dist.total(len(valid)), data.path)

    def epochs():
        for epoch in itertools.count():
            gen = None if seed is None else torch.Generator(valid.device).manual_seed(seed + epoch)
            yield from data.epoch(valid, batch_size, drop_last, gen)

    return itertools.islice(epochs(), start, None)  # skipping slices index permutations only: cheap


def finish_wandb_quietly(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        wandb.run.finish(exit_code=exit_code)


class Stage:
    """`name`: metric prefix and config section; load_from: another run's finished checkpoint, used, not trained."""

    def __init__(
        self,
        name: str,
        ckpt_name: str,
        objects: dict,
        total: int,
        run,
        load_from: str | None = None,
        reuse_metrics: bool = False,
        batch_size: int = 0,
        updates_per_epoch: int | None = None,
        epoch_samples: int | None = None,
    ):
        if total < 1:
            raise ConfigError(f"{name}: the stage would run {total} updates; check its num_epochs / total_updates")
        self.name, self.ckpt, self.objects, self.total, self.run = name, run.dir / ckpt_name, objects, total, run
        self.cfg, self.device, self.load_from, self.reuse_metrics = run.cfg, run.device, load_from, reuse_metrics
        self.batch_size, self.updates_per_epoch, self.epoch_samples = batch_size, updates_per_epoch, epoch_samples
        self.sched = objects.get("sched")
        self.started = time.perf_counter()  # the stage's wall time, for results.json
        saved = {}  # the checkpoint's loss window and final training loss, if any
        self.start, self.done = restore_stage(self.ckpt, objects, load_from, name, run.cfg, saved)
        dist.broadcast_modules(*(m for m in objects.values() if isinstance(m, torch.nn.Module)))
        self.skipped = self.done  # nothing trained in this process
        self.guard = NanGuard(name, self.device)
        self._loss_sum = None if saved.get("loss_sum") is None else saved["loss_sum"].to(self.device)
        self._loss_count = saved.get("loss_count", 0)
        self.final_train_loss = saved.get("final_train_loss")
        self.data_seed = stage_seed(run.cfg.seed, name, "data", dist.rank())  # its epochs' order
        if dist.is_main() and load_from:
            tqdm.write(f"{name}: loaded the finished stage from {load_from}, not trained here")
        elif dist.is_main() and self.done:
            tqdm.write(f"{name}: finished earlier ({self.ckpt}), skipped")
        elif dist.is_main() and self.start > 0:
            tqdm.write(f"{name}: resuming from update {self.start} of {total} ({self.ckpt})")

    @classmethod
    def on_data(
        cls, name, ckpt_name, objects, run, c, data, valid, drop_last=True, whole_epochs=False, reuse_metrics=False
    ):
        """Stage of section `c` over `valid`, its batches and objects["sched"]: docs/FAITHFULNESS.md, "Optimisation"."""
        samples = dist.total(len(valid))
        per_epoch = num_batches(samples, c.batch_size, drop_last)
        total = getattr(c, "total_updates", None)
        if total is None:
            total = c.num_epochs * per_epoch
        elif whole_epochs:
            total = max(1, total // per_epoch) * per_epoch
        warmup = int(c.warmup_epochs * per_epoch)
        cooldown = getattr(c, "cooldown_ratio", 0.0)  # the BC baseline's
        objects["sched"] = make_scheduler(objects["optim"], total, warmup, c.lr_schedule, cooldown)
        extra = getattr(c, "labeled_batch_size", 0)
        epoch_samples = (per_epoch * c.batch_size if drop_last else samples) + extra * per_epoch
        sizes = dict(batch_size=c.batch_size + extra, updates_per_epoch=per_epoch, epoch_samples=epoch_samples)
        stage = cls(name, ckpt_name, objects, total, run, c.checkpoint_path, reuse_metrics, **sizes)
        flag, seed = f"--{name}.batch_size", stage.data_seed  # its own epoch order, from the update it resumes at
        return stage, infinite_epochs(data, valid, c.batch_size, drop_last, flag=flag, seed=seed, start=stage.start)

    def updates(self) -> Iterator[int]:
        """The update numbers still to run; after the last one the stage's final checkpoint is written."""
        if self.done:
            return
        self.run.wandb.start()  # once a stage trains (its lines before the progress bar)
        steps = range(self.start, self.total)
        self.bar = tqdm(steps, desc=self.name, total=self.total, initial=self.start, disable=not dist.is_main())
        self._window = time.perf_counter()
        _stop_signals.clear()
        main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
        handled = [s for s in STOP_SIGNALS if s != signal.SIGINT or signal.getsignal(s) is signal.default_int_handler]
        previous = {s: signal.signal(s, _on_stop_signal) for s in handled} if main_thread else {}
        watch_frames(self.device)  # the frames this stage reads and its peak GPU memory, from here
        try:
            for step in self.bar:
                yield step
                if step == self.start:  # a full update done here: its datasets' frames go to the GPU if they fit
                    place_frames(self.device, self.name)
                interrupt_point(self.name, str(step + 1))
                stop = bool(_stop_signals)
                if dist.active():  # all ranks decide, at the logging cadence: none waits for a rank that has left
                    stop = self.every(self.cfg.log_every, step) and dist.total(int(stop)) > 0
                if stop:
                    self._stop(step + 1)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self._save(self.total)
        self.done = True
        interrupt_point(self.name, "trained")

    def _save(self, n: int) -> None:
        self.guard.check(self.ckpt)
        loss_sum = None if self._loss_sum is None else self._loss_sum.cpu()
        extra = {"loss_sum": loss_sum, "loss_count": self._loss_count, "final_train_loss": self.final_train_loss}
        save_stage(self.ckpt, self.objects, n, done=n >= self.total, extra=extra)

    def _stop(self, n: int) -> None:
        self._save(n)
        self.bar.close()
        ctrl_c = signal.SIGINT in _stop_signals
        why = "another rank's signal"
        if _stop_signals:
            why = "Ctrl-C" if ctrl_c else f"signal {signal.Signals(_stop_signals[0]).name}"
        if dist.is_main():
            tqdm.write(
                f"{self.name}: stopped after update {n} of {self.total} on {why}; run the same command again to "
                f"resume from there ({self.ckpt})",
                file=sys.stderr,
            )
        code = INTERRUPTED_EXIT_CODE if ctrl_c else PREEMPTED_EXIT_CODE
        finish_wandb_quietly(code)  # wandb's own lines at exit would follow the one above
        sys.exit(code)

    def every(self, num_updates: int, step: int) -> bool:
        return (step + 1) % num_updates == 0

    def log(self, step: int, loss: torch.Tensor, /, **metrics) -> None:
        """After update `step`: NaN guard; every log_every, `metrics` as <name>/<key> to wandb; checkpoint cadence."""
        self.guard.update(loss, step)
        d = loss.detach().float()
        self._loss_sum = d if self._loss_sum is None else self._loss_sum + d  # no host sync
        self._loss_count += 1
        n = step + 1
        if n % self.cfg.log_every == 0:
            self.guard.check(self.ckpt)
            self.final_train_loss = self._loss_sum.item() / self._loss_count  # the loop syncs here anyway
            self._loss_sum, self._loss_count = None, 0
            values = {f"{self.name}/{k}": (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
            if self.sched is not None:
                values[f"{self.name}/learning_rate"] = self.sched.get_last_lr()[0]
            if self.epoch_samples:
                samples = self._samples_before(n) - self._samples_before(n - self.cfg.log_every)
                values[f"{self.name}/samples_per_s"] = samples / (time.perf_counter() - self._window)
            if self.updates_per_epoch:
                values[f"{self.name}/epoch"] = n / self.updates_per_epoch
            values[f"{self.name}/step"] = n
            self.run.wandb.log(values)
            self.bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
            self._window = time.perf_counter()
        if n % self.cfg.checkpoint_every == 0 and n < self.total:
            self._save(n)

    def _samples_before(self, n: int) -> int:
        """The samples of updates 0 .. n-1: whole epochs, then full batches (an epoch's partial batch is its last)."""
        epochs, rest = divmod(n, self.updates_per_epoch)
        return epochs * self.epoch_samples + rest * self.batch_size

    def final_metrics(self, compute: Callable[[], dict]) -> dict:
        """`compute()` once (seeded), else the stored or reused metrics; logged, kept by the checkpoint, in results."""
        path = self.ckpt.with_suffix(".metrics.json")
        stored = Path(self.load_from).with_suffix(".metrics.json") if self.load_from else path
        reuse = self.reuse_metrics if self.load_from else self.skipped
        metrics = json.loads(stored.read_text()) if reuse and stored.exists() else None
        if metrics is not None and self.load_from:
            metrics[f"{self.name}/trained_updates"] = 0
        elif metrics is None:
            seed_stage(self.cfg.seed, self.name, "final")  # the same draws whenever and wherever they are computed
            self.run.wandb.start()
            computed = compute()
            if self.final_train_loss is not None:  # mean loss of the stage's last complete log window
                computed[f"{self.name}/final_train_loss"] = self.final_train_loss
            metrics = {**_mean_over_ranks(computed), f"{self.name}/updates": self.total}
            metrics[f"{self.name}/trained_updates"] = 0 if self.load_from else self.total  # by this run
            interrupt_point(self.name, "final")
            if dist.is_main():
                write_json(path, metrics)
        self.run.wandb.log({k: v for k, v in metrics.items() if not isinstance(v, list)})
        self.run.results.stage(self.name, time.perf_counter() - self.started, metrics, skipped=self.skipped)
        interrupt_point(self.name, "end")
        return metrics


def _mean_over_ranks(metrics: dict) -> dict:
    every = dist.gather_objects(metrics)  # one dict per rank, the same keys
    out = dict(metrics)
    for k, v in metrics.items():
        values = [m[k] for m in every]
        if isinstance(v, int | float) and not isinstance(v, bool) and any(x != values[0] for x in values):
            out[k] = math.fsum(values) / len(values)
    return out
