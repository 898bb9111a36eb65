"""A CUDA build of torch with `count` GPUs, made from the CPU build by adding only what that build lacks, at torch's
lowest layer: the C extension's CUDA entry points (torch._C._cuda_*), its CUDA runtime module (torch.cuda._cudart),
the event and stream base classes it defines on a CUDA build, and the build metadata (torch.version.cuda). Every
public function of torch.cuda (is_available, device_count, set_device, current_device, mem_get_info, empty_cache,
get/set_rng_state, Event, current_stream, memory_stats, memory_allocated, max_memory_allocated,
reset_peak_memory_stats, ...) is torch's own and runs with its argument checks and its lazy initialisation. A CPU
torch.Generator stands in for each GPU's generator (made by the fake torch._C._cuda_init, as the real one makes the
CUDA generators); memory is counted, never allocated: the caching allocator's statistics
(torch._C._cuda_memoryStats) report `used` bytes allocated now and `peak` at most since the last reset.

In a test: `FakeCuda(count=2, patch=monkeypatch)` (undone after the test). In a subprocess: `FakeCuda(count=2)`
(see tests/test_user_errors.py)."""

import torch
import torch.cuda

GiB = 2**30
CUDA_TYPE = 1  # torch's DeviceType code of CUDA, as torch._C._cuda_getCurrentStream returns it


class _Cudart:
    """The CUDA runtime calls torch.cuda makes through torch.cuda.cudart()."""

    def __init__(self, gpu: "FakeCuda"):
        self.gpu = gpu

    def cudaMemGetInfo(self, device: int) -> tuple[int, int]:
        if not 0 <= device < self.gpu.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {device}")
        return self.gpu.free(), int(self.gpu.total)


class _Generator(torch.Generator):
    """A CPU generator standing in for one GPU's: the states it is given are recorded (device type, dtype)."""

    restored: list = []

    def set_state(self, state: torch.Tensor) -> "_Generator":
        _Generator.restored.append((self.index, state.device.type, state.dtype))
        return super().set_state(state)


class FakeCuda:
    """`count` GPUs of `total` bytes each, `used` bytes held by live tensors, `peak` the most they held since the
    last torch.cuda.reset_peak_memory_stats (at least `used`), and `cached` bytes kept by PyTorch's caching allocator
    after they were freed (reported as used until torch.cuda.empty_cache). Memory in use (`used`, `peak` or
    `cached` > 0) means a stage ran: CUDA is initialised at once, as it would be. Events record and wait at once
    (counted)."""

    def __init__(
        self, count: int = 1, total: float = 79.1 * GiB, used: float = 0, cached: float = 0, peak: float = 0, patch=None
    ):
        self.count, self.total, self.used, self.cached = count, total, used, cached
        self.peak = max(peak, used)
        self.current = 0
        self.recorded = self.waited = 0
        self.generators: tuple = ()
        if patch is None:  # a subprocess: nothing to undo
            patch = _setattr
        else:
            patch = _patcher(patch)
        C = torch._C
        patch(torch.version, "cuda", "12.8")
        patch(C, "_has_cuda", True)
        patch(C, "_cuda_getDeviceCount", lambda: self.count)
        patch(C, "_cuda_init", self._init)
        patch(C, "_cuda_getDevice", lambda: self.current)
        patch(C, "_cuda_setDevice", self._set_device)
        patch(C, "_cuda_emptyCache", self._empty_cache)
        patch(C, "_cuda_memoryStats", self._memory_stats)
        patch(C, "_cuda_resetPeakMemoryStats", self._reset_peak)
        patch(C, "_cuda_getCurrentStream", lambda index: (0, self.current if index is None else index, CUDA_TYPE))
        gpu = self
        patch(C._CudaStreamBase, "__new__", lambda cls, *args, **kwargs: object.__new__(cls))
        patch(C._CudaStreamBase, "__init__", lambda obj, *args, **kwargs: None)
        patch(C._CudaEventBase, "__new__", lambda cls, *args, **kwargs: object.__new__(cls))
        patch(C._CudaEventBase, "__init__", lambda obj, *args, **kwargs: None)
        patch(C._CudaEventBase, "record", lambda event, stream: gpu._count("recorded"))
        patch(C._CudaEventBase, "synchronize", lambda event: gpu._count("waited"))
        # torch.cuda's own state, fresh: not initialised, no device count cached, no calls queued for initialisation
        # (the capability checks torch queues at import read the card's properties, which this fake has not).
        patch(torch.cuda, "_cudart", _Cudart(self))
        patch(torch.cuda, "_initialized", False)
        patch(torch.cuda, "_cached_device_count", None)
        patch(torch.cuda, "_queued_calls", [])
        patch(torch.cuda, "_lazy_seed_tracker", type(torch.cuda._lazy_seed_tracker)())
        patch(torch.cuda, "default_generators", ())
        # What a run on CUDA sets for the process (src/optim.py: setup_backends; TF32 makes torch's float32 matmul
        # precision "high"): put back after the test.
        for flags, name in [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]:
            patch(flags, name, getattr(flags, name))
        patch(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
        self._patch = patch
        _Generator.restored = []
        if cached or used or peak:
            torch.cuda.init()

    @property
    def restored(self) -> list:
        """(device index, device type, dtype) of each RNG state torch set on a GPU's generator."""
        return _Generator.restored

    def free(self) -> int:
        return int(self.total - self.used - self.cached)

    def _init(self) -> None:
        """What the C extension's CUDA initialisation makes: a default generator per device."""
        self.generators = tuple(_generator(i) for i in range(self.count))
        self._patch(torch.cuda, "default_generators", self.generators)

    def _set_device(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        self.current = index

    def _empty_cache(self) -> None:
        self.cached = 0

    def _check(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise RuntimeError(f"Invalid device argument {index}: did you call init?")

    def _memory_stats(self, index: int) -> dict:
        """The caching allocator's statistics of a device, nested as the C extension returns them: the bytes of live
        tensors over all pools, now and at the peak (the other statistics are left out)."""
        self._check(index)
        return {"allocated_bytes": {"all": {"current": int(self.used), "peak": int(self.peak)}}}

    def _reset_peak(self, index: int) -> None:
        self._check(index)
        self.peak = self.used

    def _count(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)


def _generator(index: int) -> _Generator:
    g = _Generator()
    g.index = index
    return g


def _setattr(obj, name, value) -> None:
    setattr(obj, name, value)


def _patcher(monkeypatch):
    return lambda obj, name, value: monkeypatch.setattr(obj, name, value, raising=False)
