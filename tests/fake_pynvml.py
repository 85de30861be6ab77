"""A fake ``pynvml`` for tests: configurable devices, fields that fail, an init that fails.

Install with ``monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([...]))``;
``import pynvml`` then returns the instance. Only the calls llmbench makes are
provided, with pynvml's names, units (mW, mJ, bytes) and error classes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

GiB = 2**30


class NVMLError(Exception):
    def __init__(self, value: int, message: str):
        self.value = value
        super().__init__(message)


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(FakeNvml.NVML_ERROR_NOT_SUPPORTED, "Not Supported")


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found")


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_total_bytes: int = 80 * GiB
    memory_used_bytes: int = 10 * GiB
    """Memory info v2's ``used``; v1's ``used`` adds ``memory_reserved_bytes`` to it, as NVML does."""
    memory_reserved_bytes: int = 0
    """Driver-reserved memory (memory info v2's ``reserved``)."""
    gpu_util_pct: int = 90
    memory_util_pct: int = 40
    power_w: float = 300.0
    """Reported power, and the rate at which the energy counter advances."""
    energy_start_mj: int = 1_000_000
    temperature_c: int = 60
    sm_clock_mhz: int = 1980
    clock_event_mask: int = 0
    processes: dict[int, int | None] = field(default_factory=dict)
    """pid -> used bytes (None: NVML_VALUE_NOT_AVAILABLE)."""
    unsupported: set[str] = field(default_factory=set)
    """Names of calls (e.g. ``"nvmlDeviceGetPowerUsage"``) that raise NotSupported here."""
    broken: dict[str, Exception] = field(default_factory=dict)
    """Calls that raise something other than NVMLError (an old binding, a missing symbol)."""
    no_memory_v2: bool = False
    """A driver without nvmlDeviceGetMemoryInfo_v2 (FUNCTION_NOT_FOUND, as pynvml raises it)."""
    mig: list[tuple[str, str]] = field(default_factory=list)
    """MIG devices on this GPU, as (UUID, name) — e.g. ("MIG-4f1c…", "NVIDIA H100 80GB HBM3 MIG 1g.10gb")."""


@dataclass(frozen=True)
class MigHandle:
    gpu: int
    index: int


class FakeNvml:
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_ERROR_FUNCTION_NOT_FOUND = 13
    NVML_ERROR_NOT_FOUND = 6
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    nvmlMemory_v2 = 0x02000028
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound

    def __init__(
        self,
        gpus: list[FakeGpu],
        init_error: Exception | None = None,
        clock: Callable[[], float] = time.time,
        driver: str = "550.54.15",
        cuda_driver_version: int = 12040,
    ):
        self.gpus = gpus
        self.init_error = init_error
        self.clock = clock
        """The energy counter advances by ``power_w`` per second of this clock since creation."""
        self.driver = driver
        self.cuda_driver_version = cuda_driver_version
        self.t0 = clock()
        self.initialised = 0
        self.calls: dict[str, int] = {}

    def _gpu(self, call: str, handle: int) -> FakeGpu:
        if not self.initialised:
            raise NVMLError(1, "Uninitialized")
        self.calls[call] = self.calls.get(call, 0) + 1
        gpu = self.gpus[handle]
        if call in gpu.unsupported:
            raise NVMLError_NotSupported()
        if call in gpu.broken:
            raise gpu.broken[call]
        return gpu

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        if not self.initialised:
            raise NVMLError(1, "Uninitialized")
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.cuda_driver_version

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise NVMLError(2, "Invalid Argument")
        return index

    def nvmlDeviceGetName(self, handle: int | MigHandle) -> str:
        if isinstance(handle, MigHandle):
            return self._gpu("nvmlDeviceGetName", handle.gpu).mig[handle.index][1]
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: int | MigHandle) -> str:
        if isinstance(handle, MigHandle):
            return self._gpu("nvmlDeviceGetUUID", handle.gpu).mig[handle.index][0]
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: int) -> int:
        return len(self._gpu("nvmlDeviceGetMaxMigDeviceCount", handle).mig)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: int, index: int) -> MigHandle:
        if not 0 <= index < len(self._gpu("nvmlDeviceGetMigDeviceHandleByIndex", handle).mig):
            raise NVMLError(self.NVML_ERROR_NOT_FOUND, "Not Found")
        return MigHandle(handle, index)

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> SimpleNamespace:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        total, used, reserved = (
            gpu.memory_total_bytes,
            gpu.memory_used_bytes,
            gpu.memory_reserved_bytes,
        )
        if not version:  # v1 counts driver-reserved memory as used
            return SimpleNamespace(total=total, used=used + reserved, free=total - used - reserved)
        if gpu.no_memory_v2:
            raise NVMLError(self.NVML_ERROR_FUNCTION_NOT_FOUND, "Function Not Found")
        assert version == self.nvmlMemory_v2
        return SimpleNamespace(
            version=version, total=total, reserved=reserved, used=used, free=total - used - reserved
        )

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=gpu.gpu_util_pct, memory=gpu.memory_util_pct)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return round(self._gpu("nvmlDeviceGetPowerUsage", handle).power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle)
        return gpu.energy_start_mj + round(gpu.power_w * (self.clock() - self.t0) * 1000)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._gpu("nvmlDeviceGetTemperature", handle).temperature_c

    def nvmlDeviceGetClockInfo(self, handle: int, clock_type: int) -> int:
        assert clock_type == self.NVML_CLOCK_SM
        return self._gpu("nvmlDeviceGetClockInfo", handle).sm_clock_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).clock_event_mask

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpu.processes.items()]
