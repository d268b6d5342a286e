"""NVIDIA GPU energy through NVML (the `pynvml` module of nvidia-ml-py).

Method, best first:
- "nvml-counter": nvmlDeviceGetTotalEnergyConsumption, mJ since the driver loaded (Volta and newer).
- "nvml-polling": power sampled ~20 times a second on a thread and integrated (trapezoid rule);
  the instant-power field where the driver has it, else nvmlDeviceGetPowerUsage (on recent cards a
  1 s average, which smears short windows).
Either way the window's thread also samples SM/memory clocks, temperature, the enforced power limit
and the clock-event (throttle) reasons, which go into Energy.telemetry.

Windows last at least NVML_MIN_WINDOW_S (5 s), not the 1 s other sensors get, because NVML's
readings move in steps: the energy counter every 20-100 ms (PETSc's PetscLogGpuEnergyMeter notes;
Zeus measured ~100 ms), the instant-power field every ~100 ms (tests/data/energy/h100_pcie_fp8_burst.json).
A window that opens on an idle GPU and closes at full power reads the counter's last update at
each end, so it misses up to one period of full power: on an RTX 4090 (30 W idle, 450 W busy,
0.1 s period) 45 J at worst and 21 J on average, 8 % (3.9 %) of the 1.2 s windows used before,
1.7 % (0.8 %) of the 6 s windows repeat_until_measured now aims at. Replayed on a recorded H100
PCIe trace with a modelled 0.1 s counter (`make bench` section energy), windows opened in the
0.1 s before a matmul read 2.7 % low on average (5.3 % at worst) at 1.2 s, 0.6 % (1.2 %) at 6 s.
Aligning the edges to counter ticks instead (spinning until it moves) was the alternative; it was
not taken because the wait for the closing tick adds idle time to the window (an idle tail of up
to one period, which lowers watts_avg, the figure efficiency and the projection use, by as much
as it fixes), and because when the counter's value is stamped inside its period is undocumented.
Zeus's profiler (zeus.profile) likewise settles on 5 s measurement windows.
nvmlDeviceGetPowerUsage, used only without a counter and without the instant field, is a 1 s
average on Ampere and newer (its value lags the work by ~0.5 s): on the same trace a window
opened just before the matmul reads 5.5 % low at 6 s, 28 % at 1.2 s.

Every NVML call goes through `NvmlLibrary.call`, the one place NVML errors become typed exceptions:

    NvmlError (EnergyError)
    ├── NvmlNotSupported     NOT_SUPPORTED: the card lacks the reading (GeForce, laptop, pre-Volta)
    ├── NvmlFunctionMissing  the driver or nvidia-ml-py is older than the call
    ├── NvmlNoPermission
    ├── NvmlRefused          INVALID_ARGUMENT, DEPRECATED: this driver will never answer it as asked
    ├── NvmlLibraryMissing   no driver / library, nvidia-ml-py not installed
    ├── NvmlGpuLost          the GPU fell off the bus or needs a reset (also SensorLost)
    └── NvmlFailure          any other NVML error: UNKNOWN, NOT_READY, TIMEOUT... (also SensorLost)

The first five are SensorUnavailable: asking again gets the same answer. Only a lost GPU, or a
failure of the reading the energy comes from, voids a window: a telemetry field (clocks,
temperature, power limit, throttle reasons) that fails is left out of that reading, and so is the
power sample when the counter gives the energy.

The NVML module object is injected (`nvml=`), so tests pass a stand-in that replays real readings.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from probes.energy.cuda_devices import cuda_pci_bus_ids
from probes.energy.meter import (
    Clock,
    EnergyError,
    EnergyMeter,
    NullMeter,
    PowerReading,
    PowerTrace,
    Sample,
    Sampler,
    SensorLost,
    SensorUnavailable,
    spread,
)

# Values from nvml.h; fixed by NVIDIA's ABI, and older nvidia-ml-py releases lack some names.
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0
NVML_FI_DEV_POWER_INSTANT = 186
NVML_POWER_SCOPE_GPU = 0
NVML_SUCCESS = 0

#: Clock-event (throttle) reason bits, named as nvidia-smi's clocks_event_reasons.* fields.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the bits set in a clock-event reasons mask; unknown bits as hex, never dropped."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    bit = 1
    while unknown:
        if unknown & bit:
            names.append(f"unknown_{bit:#x}")
            unknown &= ~bit
        bit <<= 1
    return names


#: Shortest window an NVML meter trusts; the module docstring says why 5 s.
NVML_MIN_WINDOW_S = 5.0


class NvmlError(EnergyError):
    """An NVML call failed; the message names the call and NVML's reason."""

    #: NVML's return code (nvml.h), None when nvidia-ml-py lacks the function altogether.
    code: int | None = None


class NvmlNotSupported(NvmlError, SensorUnavailable):
    pass


class NvmlFunctionMissing(NvmlError, SensorUnavailable):
    pass


class NvmlNoPermission(NvmlError, SensorUnavailable):
    pass


class NvmlRefused(NvmlError, SensorUnavailable):
    pass


class NvmlLibraryMissing(NvmlError, SensorUnavailable):
    pass


class NvmlGpuLost(NvmlError, SensorLost):
    pass


class NvmlFailure(NvmlError, SensorLost):
    pass


# NVML return code -> (exception, what it means for the user). Codes from nvml.h.
_ERRORS: dict[int, tuple[type[NvmlError], str]] = {
    2: (NvmlRefused, "the driver does not accept this request for this GPU"),
    3: (NvmlNotSupported, "this GPU does not report it (usual on GeForce, laptop and pre-Volta cards)"),
    4: (NvmlNoPermission, "NVML refused the request"),
    9: (NvmlLibraryMissing, "the NVIDIA driver is not loaded"),
    12: (NvmlLibraryMissing, "no NVIDIA driver is installed"),
    13: (NvmlFunctionMissing, "the NVIDIA driver is older than this call"),
    15: (NvmlGpuLost, "the GPU fell off the bus"),
    16: (NvmlGpuLost, "the GPU needs a reset"),
    18: (NvmlLibraryMissing, "the NVML library and the kernel driver differ in version; reboot?"),
    26: (NvmlRefused, "the driver no longer offers this call"),
    28: (NvmlGpuLost, "the GPU is no longer present"),
}


def error_for(code: int | None, message: str) -> NvmlError:
    """The typed exception for NVML return code `code`, its message saying what it means for the user."""
    cls, meaning = _ERRORS.get(code, (NvmlFailure, "")) if code is not None else (NvmlFailure, "")
    error = cls(message + (f" ({meaning})" if meaning else ""))
    error.code = code
    return error


class NvmlLibrary:
    """The NVML module plus the single place its errors are mapped."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self._initialised = False

    def call(self, name: str, *args: Any) -> Any:
        function = getattr(self.module, name, None)
        if function is None:
            raise NvmlFunctionMissing(f"NVML {name}: not in this nvidia-ml-py (upgrade nvidia-ml-py)")
        try:
            return function(*args)
        except self.module.NVMLError as exc:
            raise error_for(getattr(exc, "value", None), f"NVML {name}: {exc}") from exc

    def init(self) -> None:
        self.call("nvmlInit")
        self._initialised = True

    def shutdown(self) -> None:
        """Balance init (NVML counts them); errors at shutdown change nothing for the user."""
        if self._initialised:
            self._initialised = False
            try:
                self.call("nvmlShutdown")
            except NvmlError:
                pass


def load_nvml(nvml: Any = None) -> NvmlLibrary:
    """Import (unless given) and initialise NVML; raise NvmlError with the reason if impossible."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as exc:
            raise NvmlLibraryMissing("nvidia-ml-py is not installed (it provides pynvml)") from exc
    lib = NvmlLibrary(nvml)
    lib.init()
    return lib


def _visible_entries() -> list[str] | None:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def _torch_uuid(cuda_index: int) -> str | None:
    """The GPU's UUID from torch, only if this process already initialised CUDA.

    That is the exact CUDA->NVML mapping; initialising CUDA through torch just for it would cost
    every `flopwatt monitor` torch's start-up, so otherwise the CUDA driver gives the bus id.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    uuid = getattr(torch.cuda.get_device_properties(cuda_index), "uuid", None)  # torch >= 2.1
    return None if uuid is None else f"GPU-{uuid}"


def nvml_handle(lib: NvmlLibrary, cuda_index: int, *, cuda: Any = None) -> Any:
    """The NVML handle of the GPU CUDA calls cuda:N.

    By torch's UUID for it once torch has initialised CUDA; else by its PCI bus id from the CUDA
    driver (probes.energy.cuda_devices: CUDA's fastest-first order is not NVML's PCI order); else,
    with no CUDA driver to ask, by CUDA_VISIBLE_DEVICES (indices or GPU- UUID prefixes), assuming
    CUDA enumerates in PCI order (true with one GPU, or CUDA_DEVICE_ORDER=PCI_BUS_ID). `cuda`
    replaces the CUDA driver library (tests).
    """
    uuid = _torch_uuid(cuda_index)
    if uuid is not None:
        try:
            return lib.call("nvmlDeviceGetHandleByUUID", uuid)
        except NvmlError:
            pass  # a UUID NVML does not know (ROCm build, odd format): the bus id still maps it
    entries = _visible_entries()
    if entries is not None and cuda_index < len(entries) and entries[cuda_index].startswith("MIG-"):
        raise SensorUnavailable("a MIG instance has no power sensor of its own; NVML reports the whole GPU")
    bus_ids = cuda_pci_bus_ids(cuda)
    if bus_ids is not None:
        if cuda_index >= len(bus_ids):
            raise SensorUnavailable(f"cuda:{cuda_index} is not visible: CUDA shows this process {len(bus_ids)} GPU(s)")
        try:
            return lib.call("nvmlDeviceGetHandleByPciBusId", bus_ids[cuda_index])
        except NvmlError:
            pass  # a bus id NVML does not know (a passed-through GPU in a VM?): the environment still maps it
    if entries is None:
        return lib.call("nvmlDeviceGetHandleByIndex", cuda_index)
    if cuda_index >= len(entries):
        raise SensorUnavailable(f"cuda:{cuda_index} is not visible (CUDA_VISIBLE_DEVICES={','.join(entries)})")
    entry = entries[cuda_index]
    if entry.isdigit():
        return lib.call("nvmlDeviceGetHandleByIndex", int(entry))
    for index in range(lib.call("nvmlDeviceGetCount")):
        handle = lib.call("nvmlDeviceGetHandleByIndex", index)
        if str(lib.call("nvmlDeviceGetUUID", handle)).startswith(entry):
            return handle
    raise SensorUnavailable(f"no GPU matches CUDA_VISIBLE_DEVICES entry {entry!r}")


def visible_cuda_devices(nvml: Any = None, *, cuda: Any = None) -> list[str]:
    """"cuda:N" for every NVIDIA GPU this process may use: as many as the CUDA driver shows, else
    as many as NVML counts within CUDA_VISIBLE_DEVICES; empty without either."""
    bus_ids = cuda_pci_bus_ids(cuda)
    if bus_ids is not None:
        return [f"cuda:{i}" for i in range(len(bus_ids))]
    try:
        lib = load_nvml(nvml)
    except EnergyError:
        return []
    try:
        count = int(lib.call("nvmlDeviceGetCount"))
    except EnergyError:
        return []
    finally:
        lib.shutdown()
    entries = _visible_entries()
    visible = count if entries is None else min(count, len(entries))
    return [f"cuda:{i}" for i in range(visible)]


_TELEMETRY_FIELDS = ("sm_clock_hz", "mem_clock_hz", "temperature_c", "power_limit_w", "throttle_reasons")


class NvmlMeter(EnergyMeter):
    """Energy of one NVIDIA GPU; see the module docstring for the method it picks.

    A card that reports neither energy nor power still gets a meter: its windows are unavailable
    with the reason, but `read()` still shows the clocks and temperature it does report.
    """

    def __init__(
        self,
        lib: NvmlLibrary,
        handle: Any,
        device: str,
        *,
        poll_interval_s: float = 0.05,
        telemetry_every: int = 5,
        min_window_s: float = NVML_MIN_WINDOW_S,
        clock: Clock = time.perf_counter,
    ) -> None:
        """Ask the card once what it supports; NvmlError if it cannot be asked at all (lost, no permission)."""
        super().__init__(device, min_window_s=min_window_s, clock=clock)
        self._lib = lib
        self._handle = handle
        self._poll_interval_s = poll_interval_s
        self._telemetry_every = telemetry_every
        #: Telemetry fields this card or driver cannot give, with the reason (asked once, then skipped).
        self.unsupported: dict[str, str] = {}
        self._reasons_call = "nvmlDeviceGetCurrentClocksEventReasons"
        self._lost: str | None = None
        self.gpu_name = self._name()

        try:
            self._read_counter_mj()
            self.method = "nvml-counter"
        except SensorUnavailable as exc:
            self.unsupported["energy_counter"] = str(exc)
            self.method = "nvml-polling"
        self.power_source = self._find_power_source()
        self._no_energy: str | None = None
        if self.power_source is None and self.method == "nvml-polling":
            self._no_energy = (
                f"{self.gpu_name} reports neither an energy counter nor power through NVML "
                f"({self.unsupported['power']})"
            )
        # Per-window state.
        self._window_t0 = 0.0
        self._counter0_mj = 0
        self._trace = PowerTrace()
        self._series: dict[str, list[float]] = {}
        self._reasons_seen: set[str] = set()
        #: Readings that failed this window without voiding it: field -> the last error.
        self._telemetry_errors: dict[str, str] = {}
        self._polls = 0
        self._window_failure: EnergyError | None = None

    @classmethod
    def open(cls, cuda_index: int, *, nvml: Any = None, cuda: Any = None, **options: Any) -> EnergyMeter:
        """A meter for cuda:N, or a NullMeter saying why there can't be one (`nvml`, `cuda`: stand-ins)."""
        device = f"cuda:{cuda_index}"
        try:
            lib = load_nvml(nvml)
        except EnergyError as exc:
            return NullMeter(device, str(exc))
        try:
            return cls(lib, nvml_handle(lib, cuda_index, cuda=cuda), device, **options)
        except EnergyError as exc:
            lib.shutdown()
            return NullMeter(device, str(exc))

    def close(self) -> None:
        super().close()
        self._lib.shutdown()

    # -- sensor reads -------------------------------------------------------------------------

    def _name(self) -> str:
        try:
            name = self._lib.call("nvmlDeviceGetName", self._handle)
        except NvmlError:
            return "NVIDIA GPU"
        return name.decode() if isinstance(name, bytes) else str(name)

    def _read_counter_mj(self) -> int:
        return int(self._lib.call("nvmlDeviceGetTotalEnergyConsumption", self._handle))

    def _instant_power_mw(self) -> float:
        value = self._lib.call(
            "nvmlDeviceGetFieldValues", self._handle, [(NVML_FI_DEV_POWER_INSTANT, NVML_POWER_SCOPE_GPU)]
        )[0]
        if value.nvmlReturn != NVML_SUCCESS:  # the call worked; this field carries its own code
            raise error_for(value.nvmlReturn, f"NVML instant power field: return code {value.nvmlReturn}")
        return float(value.value.uiVal)

    def _usage_power_mw(self) -> float:
        return float(self._lib.call("nvmlDeviceGetPowerUsage", self._handle))

    def _find_power_source(self) -> str | None:
        # Asked once, when the meter opens: a source that fails then, for any reason but a lost
        # GPU, is not used (a passing UNKNOWN costs the instant field, not the meter).
        try:
            self._instant_power_mw()
            return "instant power field"
        except NvmlGpuLost:
            raise
        except NvmlError as exc:
            self.unsupported["instant_power"] = str(exc)
        try:
            self._usage_power_mw()
            return "nvmlDeviceGetPowerUsage"
        except NvmlGpuLost:
            raise
        except NvmlError as exc:
            self.unsupported["power"] = str(exc)
        return None

    def _power_w(self) -> float:
        read = self._instant_power_mw if self.power_source == "instant power field" else self._usage_power_mw
        return read() / 1000.0

    def _read_field(self, name: str) -> Any:
        h = self._handle
        if name == "sm_clock_hz":
            return self._lib.call("nvmlDeviceGetClockInfo", h, NVML_CLOCK_SM) * 1e6
        if name == "mem_clock_hz":
            return self._lib.call("nvmlDeviceGetClockInfo", h, NVML_CLOCK_MEM) * 1e6
        if name == "temperature_c":
            return float(self._lib.call("nvmlDeviceGetTemperature", h, NVML_TEMPERATURE_GPU))
        if name == "power_limit_w":
            return self._lib.call("nvmlDeviceGetEnforcedPowerLimit", h) / 1000.0
        assert name == "throttle_reasons"
        return decode_clock_event_reasons(int(self._reasons_mask()))

    def _reasons_mask(self) -> int:
        try:
            return self._lib.call(self._reasons_call, self._handle)
        except NvmlFunctionMissing:
            if self._reasons_call == "nvmlDeviceGetCurrentClocksThrottleReasons":
                raise
            # Drivers before R535 only have the older name for the same bitmask.
            self._reasons_call = "nvmlDeviceGetCurrentClocksThrottleReasons"
            return self._lib.call(self._reasons_call, self._handle)

    def _telemetry_now(self) -> dict[str, Any]:
        """One reading of each telemetry field the card supports.

        A field the card will never give is noted once and not asked again; one that failed this
        time (UNKNOWN, NOT_READY...) is left out of this reading and noted in the window's
        `telemetry_errors`. Only a lost GPU raises.
        """
        values: dict[str, Any] = {}
        for name in _TELEMETRY_FIELDS:
            if name in self.unsupported:
                continue
            try:
                values[name] = self._read_field(name)
            except SensorUnavailable as exc:
                self.unsupported[name] = str(exc)
            except NvmlFailure as exc:
                self._telemetry_errors[name] = str(exc)
        return values

    # -- windows ------------------------------------------------------------------------------

    @contextmanager
    def _noting_loss(self) -> Iterator[None]:
        """Remember a lost GPU, so later windows and readings fail at once instead of asking it."""
        if self._lost is not None:
            raise SensorLost(self._lost)
        try:
            yield
        except NvmlGpuLost as exc:
            self._lost = str(exc)
            raise

    def _begin(self, t0: float) -> None:
        if self._no_energy is not None:
            raise NvmlNotSupported(self._no_energy)
        self._window_t0 = t0
        self._trace = PowerTrace()
        self._series = {}
        self._reasons_seen = set()
        self._telemetry_errors = {}
        self._polls = 0
        self._window_failure = None
        with self._noting_loss():
            if self.method == "nvml-counter":
                self._counter0_mj = self._read_counter_mj()
            self._sample(t0, telemetry=True)
        self._sampler = Sampler(self.poll, self._poll_interval_s, f"flopwatt-nvml-{self.device}").start()

    def poll(self) -> None:
        """Take one power (and every few calls, telemetry) sample; the window's thread calls this."""
        if self._sampler is None or self._window_failure is not None:
            return
        self._polls += 1
        try:
            self._sample(self._clock(), telemetry=self._polls % self._telemetry_every == 0)
        except EnergyError as exc:
            self._window_failure = exc

    def _sample(self, t: float, *, telemetry: bool) -> None:
        if self.power_source is not None:
            try:
                self._trace.add(t, self._power_w())
            except NvmlGpuLost:
                raise
            except NvmlError as exc:
                if self.method == "nvml-polling":  # the power samples are the energy
                    raise SensorLost(f"power reading stopped working: {exc}") from exc
                # The counter still gives the energy; only this sample of the peak is lost.
                if isinstance(exc, SensorUnavailable):
                    self.power_source = None
                    self.unsupported["power"] = str(exc)
                else:
                    self._telemetry_errors["power"] = str(exc)
        if telemetry:
            for name, value in self._telemetry_now().items():
                if name == "throttle_reasons":
                    self._reasons_seen.update(value)
                else:
                    self._series.setdefault(name, []).append(value)

    def _end(self, t1: float) -> Sample:
        with self._noting_loss():
            if self._window_failure is not None:
                raise self._window_failure
            # the counter first, right after t1, as _begin reads it right after t0
            counter1_mj = self._read_counter_mj() if self.method == "nvml-counter" else 0
            self._sample(t1, telemetry=True)
            seconds = t1 - self._window_t0
            if self.method == "nvml-counter":
                if counter1_mj < self._counter0_mj:
                    raise SensorLost("the NVML energy counter went backwards (driver reloaded?)")
                joules = (counter1_mj - self._counter0_mj) / 1000.0
                moved = counter1_mj != self._counter0_mj
            else:
                joules = self._trace.joules()
                moved = True
                if self._trace.peak_watts() == 0:
                    raise SensorLost(f"{self.power_source} read 0 W for the whole window")
        return Sample(
            joules=joules,
            seconds=seconds,
            watts_peak=self._trace.peak_watts(),
            telemetry=self._telemetry_summary(),
            moved=moved,
        )

    def _telemetry_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "gpu": self.gpu_name,
            "power_source": self.power_source,
            "power_samples": len(self._trace),
        }
        summary.update({name: spread(values) for name, values in self._series.items() if values})
        if "throttle_reasons" not in self.unsupported:
            summary["throttle_reasons"] = sorted(self._reasons_seen)
        if self.unsupported:
            summary["unavailable"] = dict(self.unsupported)
        if self._telemetry_errors:
            summary["telemetry_errors"] = dict(self._telemetry_errors)
        return summary

    def _read(self) -> PowerReading:
        with self._noting_loss():
            power_w = self._power_w() if self.power_source is not None else None
            now = self._telemetry_now()
        return PowerReading(
            device=self.device,
            power_w=power_w,
            clock_hz=now.get("sm_clock_hz"),
            mem_clock_hz=now.get("mem_clock_hz"),
            temperature_c=now.get("temperature_c"),
            power_limit_w=now.get("power_limit_w"),
            throttle_reasons=tuple(now.get("throttle_reasons", ())),
            unavailable_reason=None if power_w is not None else self.unsupported.get("power"),
        )
