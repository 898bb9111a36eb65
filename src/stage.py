"""One training stage, the same machinery for every stage of every method script; the loop shows only the method.

    stage = Stage("bc", "bc.pt", {"actor": actor, "optim": optim, "sched": sched}, total, run, batch_size=...)
    batches = stage.batches(data, valid, c.batch_size)  # its index batches, from where it resumes
    for step in stage.updates():            # nothing when finished earlier; resumes where it stopped
        ...                                 # next(batches), loss, backward, optimizer step
        stage.log(step, loss, mse_loss=loss)  # NaN guard; logging and checkpoints at their cadence
    stage.final_metrics(lambda: {...})      # computed once, kept beside the checkpoint, written to results.json

It owns resuming (or loading a finished stage of another run), the resume / skip messages and the progress bar, the
NaN guard, the logging cadence (the loop's only host syncs), checkpoints, where the frames go (to the GPU after the
first update if they fit: src/data.py, place_frames) and the final metrics (`<ckpt>.metrics.json`: a finished stage
run again reports what it reported the first time). Distributed (src/dist.py): networks start from
rank 0's, the guard stops every rank together, final metrics are averaged over ranks, rank 0 writes.

Stopping: while a stage trains, SIGUSR1 (SLURM's warning, scripts/slurm/run_job.sh), SIGTERM and SIGINT only set a
flag; after the update in progress the stage checkpoints, says after which update it stopped and exits with
PREEMPTED_EXIT_CODE (130 for Ctrl-C); the same command resumes. A second Ctrl-C stops at once. Distributed ranks
agree on the update to stop after at the logging cadence.

Exactness: a stage's random streams come from (seed, stage name) alone (its networks, `batches`, its final metrics)
and its checkpoint holds its loss window: a run interrupted anywhere, skipped or reusing another run's stages gives
the numbers of the uninterrupted run (tests/test_exactness.py)."""

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
    """A test hook: LAOM_INTERRUPT_AT=<stage>:<point>[:<signal>] sends the signal (SIGINT unless named) to this
    process when stage `stage` reaches `point`: "<n>" after its update n, "trained" after its last update (final
    checkpoint written, final metrics not), "final" with its final metrics computed but not yet written, "end" once
    they are recorded (between stages). The tests interrupt a run at a chosen place this way, never after a time."""
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
        """Raises when the loss of any rank was not finite: every rank of a distributed run stops at the same
        check (one all-reduce, at the host syncs that exist anyway)."""
        step = int(dist.any_rank(self.first_bad))
        if step >= 0:
            where = f"; the last good checkpoint is {last_good}" if last_good and last_good.exists() else ""
            raise FloatingPointError(f"{self.stage}: the loss became NaN or infinite at update {step}{where}")


def infinite_epochs(
    data,
    valid: torch.Tensor,
    batch_size: int,
    drop_last: bool = True,
    flag: str = "batch_size",
    seed: int | None = None,
    start: int = 0,
):
    """Batches of indices, epoch after epoch (a fresh permutation each epoch; see TrajectoryData.epoch). A batch
    larger than the samples of `valid` (of all ranks) is refused here, naming the config field `flag`: an epoch
    draws without replacement. Epoch e is permuted by its own generator seeded seed + e (seed None: by the global
    random state), and the stream begins at batch `start`: a resumed stage draws the batches an uninterrupted run
    would draw next."""
    check_batch_size(flag, batch_size, dist.total(len(valid)), data.path)

    def epochs():
        for epoch in itertools.count():
            gen = None if seed is None else torch.Generator(valid.device).manual_seed(seed + epoch)
            yield from data.epoch(valid, batch_size, drop_last, gen)

    return itertools.islice(epochs(), start, None)  # skipping slices index permutations only: cheap


def finish_wandb_quietly(exit_code: int) -> None:
    """Ends this process's wandb run, if any, without wandb's lines on the console (an interrupted run: its one line
    is the last; wandb would print its sync hint after it at exit)."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        wandb.run.finish(exit_code=exit_code)


class Stage:
    """One stage: `name` is its metric prefix and its config section, `objects` what its checkpoint `ckpt_name` holds
    (a "sched" entry's learning rate is logged), `total` its updates. load_from: a finished checkpoint of another
    run, loaded instead of training (reuse_metrics: its stored final metrics reported too). batch_size,
    updates_per_epoch, epoch_samples (an epoch whose last batch is partial): for the logged samples/s and epoch."""

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
        self.name, self.ckpt, self.objects, self.total = name, run.dir / ckpt_name, objects, total
        self.cfg, self.wandb_run, self.results, self.device = run.cfg, run.wandb, run.results, run.device
        self.load_from, self.reuse_metrics = load_from, reuse_metrics
        self.batch_size, self.updates_per_epoch, self.epoch_samples = batch_size, updates_per_epoch, epoch_samples
        self.sched = objects.get("sched")
        self.started = time.perf_counter()  # the stage's wall time, for results.json
        saved = {}  # the loss window and final training loss of the checkpoint, if any
        self.start, self.done = restore_stage(self.ckpt, objects, load_from, self.device, name, run.cfg, saved)
        dist.broadcast_modules(*(m for m in objects.values() if isinstance(m, torch.nn.Module)))
        self.skipped = self.done  # nothing trained in this process
        self.guard = NanGuard(name, self.device)
        self.bar = None
        # The loss summed on the device over the current log window, and the mean training loss over the last
        # complete one (a final metric): as the checkpoint left them, if any.
        self._loss_sum = None if saved.get("loss_sum") is None else saved["loss_sum"].to(self.device)
        self._loss_count = saved.get("loss_count", 0)
        self.final_train_loss = saved.get("final_train_loss")
        self.data_seed = stage_seed(run.cfg.seed, name, "data", dist.rank())  # its epochs' order (infinite_epochs)
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
        """The stage of section config `c` over the samples `valid` of `data`, and its index batches. An epoch is
        floor(N / B) batches of the global samples N (drop_last) or ceil(N / B); the stage runs c.num_epochs epochs
        or c.total_updates updates (whole_epochs: rounded down to whole epochs, at least one, as released), under the
        schedule objects["sched"] of objects["optim"]. A labeled batch (c.labeled_batch_size) counts in samples/s."""
        samples = dist.total(len(valid))
        per_epoch = num_batches(samples, c.batch_size, drop_last)
        total = getattr(c, "total_updates", None)
        if total is None:
            total = c.num_epochs * per_epoch
        elif whole_epochs:
            total = max(1, total // per_epoch) * per_epoch
        warmup = int(c.warmup_epochs * per_epoch)
        objects["sched"] = make_scheduler(
            objects["optim"], total, warmup, c.lr_schedule, getattr(c, "cooldown_ratio", 0)
        )
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
        self.wandb_run.start()  # the run's wandb run, once a stage trains (its lines before the progress bar)
        self.bar = tqdm(
            range(self.start, self.total),
            desc=self.name,
            initial=self.start,
            total=self.total,
            disable=not dist.is_main(),
        )
        self._window = time.perf_counter()
        _stop_signals.clear()
        main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
        # SIGINT is left alone where it is ignored (a background job without job control)
        handled = [s for s in STOP_SIGNALS if s != signal.SIGINT or signal.getsignal(s) is signal.default_int_handler]
        previous = {s: signal.signal(s, _on_stop_signal) for s in handled} if main_thread else {}
        watch_frames(self.device)  # the frames this stage reads and its peak GPU memory, from here
        try:
            for step in self.bar:
                yield step
                if step == self.start:  # a full update done here: its datasets' frames go to the GPU if they fit
                    place_frames(self.device, self.name)
                interrupt_point(self.name, str(step + 1))
                if self._preempted_after(step):  # update `step` is complete: checkpoint after it and stop
                    self._stop(step + 1)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.guard.check(self.ckpt)
        save_stage(self.ckpt, self.objects, self.total, done=True, extra=self._saved())
        self.done = True
        interrupt_point(self.name, "trained")

    def _stop(self, n: int) -> None:
        """Checkpoints after update n, says so, and exits (130 on Ctrl-C, PREEMPTED_EXIT_CODE otherwise)."""
        self.guard.check(self.ckpt)
        save_stage(self.ckpt, self.objects, n, done=n >= self.total, extra=self._saved())
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

    def _saved(self) -> dict:
        """What the checkpoint keeps of the stage itself: the loss window in progress and the final training loss."""
        loss_sum = None if self._loss_sum is None else self._loss_sum.cpu()
        return {"loss_sum": loss_sum, "loss_count": self._loss_count, "final_train_loss": self.final_train_loss}

    def _preempted_after(self, step: int) -> bool:
        """Whether to checkpoint and stop after update `step`: at once in one process; in a distributed run when
        any rank got a signal, decided by all ranks together at the logging cadence (they stop after the same
        update, so none waits in a collective for a rank that has left)."""
        if not dist.active():
            return bool(_stop_signals)
        if not self.every(self.cfg.log_every, step):
            return False
        return dist.total(int(bool(_stop_signals))) > 0

    def every(self, num_updates: int, step: int) -> bool:
        """Whether update `step` (0-based) completes a multiple of num_updates."""
        return (step + 1) % num_updates == 0

    def log(self, step: int, loss: torch.Tensor, /, **metrics) -> None:
        """After update `step`: the NaN guard sees `loss`; at the logging cadence `metrics` (tensors or numbers,
        logged as <name>/<key>), the learning rate, samples/s and the epoch go to wandb and the loss to the progress
        bar; at the checkpoint cadence the stage is saved (resumable)."""
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
            if "sched" in self.objects:
                values[f"{self.name}/learning_rate"] = self.objects["sched"].get_last_lr()[0]
            if self.batch_size:
                samples = self._samples_before(n) - self._samples_before(n - self.cfg.log_every)
                values[f"{self.name}/samples_per_s"] = samples / (time.perf_counter() - self._window)
            if self.updates_per_epoch:
                values[f"{self.name}/epoch"] = n / self.updates_per_epoch
            values[f"{self.name}/step"] = n
            self.wandb_run.log(values)
            self.bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
            self._window = time.perf_counter()
        if n % self.cfg.checkpoint_every == 0 and n < self.total:
            self.guard.check(self.ckpt)
            save_stage(self.ckpt, self.objects, n, done=False, extra=self._saved())

    def _samples_before(self, n: int) -> int:
        """The samples of updates 0 .. n-1: whole epochs, then full batches (an epoch's partial batch is its last)."""
        if not self.epoch_samples or not self.updates_per_epoch:
            return n * self.batch_size
        epochs, rest = divmod(n, self.updates_per_epoch)
        return epochs * self.epoch_samples + rest * self.batch_size

    @property
    def metrics_path(self) -> Path:
        return self.ckpt.with_suffix(".metrics.json")

    def final_metrics(self, compute: Callable[[], dict]) -> dict:
        """The stage's final metrics: `compute()` once, when the stage has just been trained (or has none stored),
        its random streams seeded from (seed, stage name, "final"); a stage finished earlier returns what it stored
        then, a reused one (reuse_metrics) its base run's. The metrics are logged, written beside the checkpoint and
        recorded in results.json. trained_updates: the updates this run trained (all of them, over however many
        processes; 0 for a stage loaded from another run)."""
        stored = None
        if self.load_from and self.reuse_metrics:
            stored = _read_metrics(Path(self.load_from).with_suffix(".metrics.json"))
        elif not self.load_from and self.skipped:
            stored = _read_metrics(self.metrics_path)
        if stored is not None:
            metrics = stored if not self.load_from else {**stored, f"{self.name}/trained_updates": 0}
        else:
            seed_stage(self.cfg.seed, self.name, "final")  # the same draws whenever and wherever they are computed
            self.wandb_run.start()
            computed = compute()
            if self.final_train_loss is not None:  # mean loss of the stage's last complete log window
                computed[f"{self.name}/final_train_loss"] = self.final_train_loss
            metrics = {**_mean_over_ranks(computed), f"{self.name}/updates": self.total}
            metrics[f"{self.name}/trained_updates"] = 0 if self.load_from else self.total  # by this run
            interrupt_point(self.name, "final")
            if dist.is_main():
                write_json(self.metrics_path, metrics)
        self.wandb_run.log({k: v for k, v in metrics.items() if not isinstance(v, list)})
        self.results.stage(self.name, time.perf_counter() - self.started, metrics, skipped=self.skipped)
        interrupt_point(self.name, "end")
        return metrics


def _mean_over_ranks(metrics: dict) -> dict:
    """Each number of a stage's final metrics averaged over ranks (a number already computed over every rank's data,
    such as an evaluation return, comes back unchanged); lists and None as they are."""
    if not dist.active():
        return metrics
    every = dist.gather_objects(metrics)  # one dict per rank, the same keys
    out = dict(metrics)
    for k, v in metrics.items():
        values = [m[k] for m in every]
        if isinstance(v, int | float) and not isinstance(v, bool) and any(x != values[0] for x in values):
            out[k] = math.fsum(values) / len(values)
    return out


def _read_metrics(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None
