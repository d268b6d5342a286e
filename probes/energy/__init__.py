"""Energy meters: one per device, measuring in windows (see probes.energy.meter for how to use one).

probes.energy.meter holds the base classes, nvml and rapl the sensors, choose picks one per device.
"""

from probes.energy.choose import meter_for, meters_for_host
from probes.energy.meter import (
    MIN_WINDOW_S,
    EnergyError,
    EnergyMeter,
    NullMeter,
    PowerReading,
    RepeatedRun,
    SensorLost,
    SensorUnavailable,
    Window,
    WindowResult,
    measure_idle,
    repeat_until_measured,
)

__all__ = [
    "MIN_WINDOW_S",
    "EnergyError",
    "EnergyMeter",
    "NullMeter",
    "PowerReading",
    "RepeatedRun",
    "SensorLost",
    "SensorUnavailable",
    "Window",
    "WindowResult",
    "measure_idle",
    "meter_for",
    "meters_for_host",
    "repeat_until_measured",
]
