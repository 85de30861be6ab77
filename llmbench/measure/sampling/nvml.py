"""NVML sampler: memory, utilisation, power, energy, temperature and clocks of the case's GPUs.

``pynvml`` (nvidia-ml-py) is imported when sampling starts, so machines
without it or without a driver still run (the sampler reports why it is
unavailable), and tests can inject a fake module through ``sys.modules``.

Energy is read from the device's total-energy counter, never integrated from
power: on recent GPUs ``nvmlDeviceGetPowerUsage`` is an average over about a
second, so integrating it at 10 Hz smears and misses changes (NVML API
reference, nvmlDeviceGetPowerUsage and nvmlDeviceGetTotalEnergyConsumption).

Memory comes from ``nvmlDeviceGetMemoryInfo`` version 2: version 1's ``used``
also counts memory the driver reserves, so an idle device reads hundreds of
MiB "used". Drivers without v2 fall back to v1 and the field error says so.
``case_memory_bytes`` is what NVML attributes to the case's own processes
(their allocators' reservations plus each process's CUDA context); it is None,
with the reason, whenever no case process appears in NVML's list (containers,
sandboxed runtimes), never a false 0.

Each field is read on its own: any exception from one call (an NVMLError, or
an AttributeError from a binding that lacks a driver's ``_v3`` function)
leaves that field missing with its reason and the rest sampled.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from llmbench.hardware import load_nvml, visible_nvml_indices
from llmbench.measure.sampling.base import Sample, Sampler, describe_error

# Bits of nvmlDeviceGetCurrentClocksEventReasons (formerly ...ThrottleReasons), nvml.h.
CLOCK_EVENT_REASONS = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
    0x200: "BoardLimit",
    0x400: "Reliability",
}


def clock_event_names(mask: int) -> list[str]:
    """Names of the set bits; an unknown bit is kept as its hex value rather than dropped."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    return [*names, f"0x{unknown:x}"] if unknown else names


@dataclass
class _Device:
    ordinal: int  # CUDA's number for it in the ranks (cuda:<ordinal>)
    nvml_index: int
    handle: Any
    unsupported: set[str] = field(default_factory=set)
    memory_v1: bool = False
    """The driver has no memory info v2: v1 figures, with their caveat."""

    @property
    def name(self) -> str:
        return f"gpu{self.ordinal}"


class NvmlSampler(Sampler):
    source = "nvml"
    columns = (
        "nvml_index",
        "memory_used_bytes",
        "memory_total_bytes",
        "case_memory_bytes",
        "gpu_util_pct",
        "memory_util_pct",
        "power_w",
        "energy_j",
        "temperature_c",
        "sm_clock_mhz",
        "clock_event_mask",
    )
    measures = "memory (device and the case's processes), utilisation, power, energy counter, temperature, SM clock, clock event reasons"

    def __init__(self, interval_s: float = 0.1, gpus: int | None = None):
        """``gpus``: the case uses the first ``gpus`` visible devices (local rank r on cuda:r)."""
        super().__init__(interval_s)
        self.gpus = gpus
        self._nvml: Any = None
        self._devices: list[_Device] = []

    def _open(self) -> None:
        nvml = load_nvml()
        try:
            indices = visible_nvml_indices(nvml, nvml.nvmlDeviceGetCount())[: self.gpus]
            if not indices:
                raise RuntimeError("no GPU visible to this process (CUDA_VISIBLE_DEVICES)")
            self._devices = [
                _Device(ordinal, index, nvml.nvmlDeviceGetHandleByIndex(index))
                for ordinal, index in enumerate(indices)
            ]
        except BaseException:
            nvml.nvmlShutdown()
            raise
        self._nvml = nvml

    def _close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):  # the readings are already taken
            self._nvml.nvmlShutdown()
        self._nvml = None

    def sample(self, root_pid: int) -> list[Sample]:
        pids = {p.pid for p in self.processes(root_pid)}
        return [self._read(device, pids) for device in self._devices]

    def _read(self, device: _Device, pids: set[int]) -> Sample:
        nvml, handle = self._nvml, device.handle

        def get(columns: tuple[str, ...], fn: Callable[..., Any], *args: Any) -> Any:
            return self._get(device, columns, fn, handle, *args)

        def memory_info(handle: Any) -> Any:
            return self._memory_info(device, handle)

        # The timestamp belongs to the energy counter (interpolated at window
        # edges); the slower calls, listing processes above all, come after it.
        t = time.time()
        energy_mj = get(("energy_j",), nvml.nvmlDeviceGetTotalEnergyConsumption)
        memory = get(("memory_used_bytes", "memory_total_bytes"), memory_info)
        util = get(("gpu_util_pct", "memory_util_pct"), nvml.nvmlDeviceGetUtilizationRates)
        power_mw = get(("power_w",), nvml.nvmlDeviceGetPowerUsage)
        temperature = get(
            ("temperature_c",), nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU
        )
        sm_clock = get(("sm_clock_mhz",), nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)
        reasons = get(("clock_event_mask",), self._clock_event_reasons)
        processes = get(("case_memory_bytes",), nvml.nvmlDeviceGetComputeRunningProcesses)
        return self._row(
            t,
            device.name,
            nvml_index=device.nvml_index,
            memory_used_bytes=memory.used if memory is not None else None,
            memory_total_bytes=memory.total if memory is not None else None,
            case_memory_bytes=self._case_memory(device, processes, pids),
            gpu_util_pct=util.gpu if util is not None else None,
            memory_util_pct=util.memory if util is not None else None,
            power_w=power_mw / 1000 if power_mw is not None else None,  # mW -> W
            energy_j=energy_mj / 1000 if energy_mj is not None else None,  # mJ -> J
            temperature_c=temperature,
            sm_clock_mhz=sm_clock,
            clock_event_mask=reasons,
        )

    def _get(
        self, device: _Device, columns: tuple[str, ...], fn: Callable[..., Any], *args: Any
    ) -> Any:
        """One NVML call; any error makes these columns missing on this device only."""
        if columns[0] in device.unsupported:
            return None
        try:
            return fn(*args)
        except Exception as exc:
            for column in columns:
                self.field_errors.setdefault(f"{device.name}.{column}", describe_error(exc))
            nvml_error = isinstance(exc, self._nvml.NVMLError)
            if not nvml_error or _is_error(self._nvml, exc, "NVML_ERROR_NOT_SUPPORTED"):
                # permanent (a missing function stays missing): stop asking every tick
                device.unsupported.add(columns[0])
            return None

    def _memory_info(self, device: _Device, handle: Any) -> Any:
        """Memory info v2 (``used`` without driver-reserved memory), else v1, saying so once."""
        nvml = self._nvml
        if not device.memory_v1:
            try:
                return nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
            except (nvml.NVMLError, AttributeError, TypeError) as exc:  # old driver or binding
                if isinstance(exc, nvml.NVMLError) and not _is_error(
                    nvml, exc, "NVML_ERROR_FUNCTION_NOT_FOUND"
                ):
                    raise
                device.memory_v1 = True
                self.field_errors.setdefault(
                    f"{device.name}.memory_used_bytes",
                    f"memory info v1 ({describe_error(exc)} for v2): used includes driver-reserved memory",
                )
        return nvml.nvmlDeviceGetMemoryInfo(handle)

    def _clock_event_reasons(self, handle: Any) -> int:
        nvml = self._nvml
        try:
            return nvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
        except nvml.NVMLError as exc:  # drivers before 535 only know the old name
            if not _is_error(nvml, exc, "NVML_ERROR_FUNCTION_NOT_FOUND"):
                raise
            return nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)

    def _case_memory(self, device: _Device, processes: Any, pids: set[int]) -> int | None:
        """Device memory held by the case's processes, or None when NVML cannot attribute it."""
        if processes is None:
            return None
        mine = [p for p in processes if p.pid in pids]
        key = f"{device.name}.case_memory_bytes"
        if not mine:
            # In a container without the host's pid namespace NVML reports host
            # pids, which match nothing here; a sandboxed runtime lists none at
            # all. Either way: unknown, not zero.
            foreign = any(not psutil.pid_exists(p.pid) for p in processes)
            self.field_errors.setdefault(
                key,
                "NVML process ids are not in this pid namespace"
                if foreign
                else "no process of the case in NVML's process list (hidden by the runtime, "
                "or the case held no device memory)",
            )
            return None
        if any(p.usedGpuMemory is None for p in mine):  # NVML_VALUE_NOT_AVAILABLE (e.g. MIG)
            self.field_errors.setdefault(key, "NVML does not report per-process memory here")
            return None
        return sum(p.usedGpuMemory for p in mine)


def _is_error(nvml: Any, exc: Exception, code_name: str) -> bool:
    return getattr(exc, "value", None) == getattr(nvml, code_name, object())
