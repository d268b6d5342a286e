"""The inventory from recorded readings: sysfs caches, DMI strings, torch's build config, NVML, and
torch's list of compiled GPU architectures.

Each fake replays what a real machine reported (the source is named beside it); the parsing and
the decisions are flopwatt's and run for real.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest
import torch

from bench.errors import FlopwattError
from bench.hardware import find_card
from probes import inventory
from probes.inventory import Device, kernel_runs_on, last_level_cache_bytes, missing_kernels, torch_blas

MiB = 1024**2


def _sysfs(root: Path, sizes: list[str]) -> Path:
    for i, size in enumerate(sizes):
        (root / f"index{i}").mkdir(parents=True)
        (root / f"index{i}" / "size").write_text(size + "\n")
    return root


def test_last_level_cache_is_the_largest_sysfs_cache(tmp_path: Path) -> None:
    # cpu0's caches on the dev VM (AMD EPYC Zen 3): L1d, L1i, L2, and the shared L3
    root = _sysfs(tmp_path / "cache", ["32K", "32K", "1024K", "32768K"])
    assert last_level_cache_bytes({"l3_cache_size": 1}, sysfs=root) == 32 * MiB
    assert last_level_cache_bytes(None, sysfs=_sysfs(tmp_path / "plain", ["49152", "2M"])) == 2 * MiB


def test_without_sysfs_the_cache_comes_from_cpuinfo(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    assert last_level_cache_bytes({"l3_cache_size": 33554432, "l2_cache_size": 524288}, sysfs=missing) == 32 * MiB
    assert last_level_cache_bytes({"l2_cache_size": 524288}, sysfs=missing) == 512 * 1024
    assert last_level_cache_bytes({}, sysfs=missing) is None


def _dmi(root: Path, vendor: str, product: str) -> Path:
    root.mkdir()
    (root / "sys_vendor").write_text(vendor + "\n")
    (root / "product_name").write_text(product + "\n")
    return root


def test_vm_detection_from_dmi_and_the_hypervisor_bit(tmp_path: Path) -> None:
    qemu = _dmi(tmp_path / "qemu", "QEMU", "Standard PC (Q35 + ICH9, 2009)")
    assert inventory._virtualization(["sse2"], dmi=qemu) == (True, "DMI sys_vendor: QEMU")
    ec2 = _dmi(tmp_path / "ec2", "Amazon EC2", "g5.xlarge")
    assert inventory._virtualization([], dmi=ec2) == (True, "DMI sys_vendor: Amazon EC2")
    desktop = _dmi(tmp_path / "desktop", "ASUS", "ROG STRIX B650E-F GAMING WIFI")
    assert inventory._virtualization(["avx2", "sse2"], dmi=desktop) == (False, "no hypervisor bit")
    # no DMI (the dev VM has none): the CPUID bit decides, and without flags nothing is known
    none = tmp_path / "missing"
    assert inventory._virtualization(["hypervisor", "sse2"], dmi=none) == (True, "CPUID hypervisor bit set")
    assert inventory._virtualization([], dmi=none) == (None, "unknown (no CPU flags)")


def test_torch_blas_from_the_build_config() -> None:
    # torch 2.13.0+cpu's build settings line, as torch.__config__.show() prints it here
    config = "PyTorch built with:\n  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, CUDA_VERSION=12.8, CXX_COMPILER=/opt/rh/gcc\n"
    assert torch_blas(config) == "mkl"
    assert torch_blas("  - Build settings: BUILD_TYPE=Release, BLAS_INFO=open, LAPACK_INFO=open\n") == "open"
    assert torch_blas("PyTorch built with:\n  - GCC 11.2\n") == ""
    assert torch_blas() == torch_blas(torch.__config__.show()) != ""


class RecordedNvml:
    """pynvml's interface, answering with one card's readings.

    A GTX 1080 Ti at idle shows PCIe Gen1 x16 on a Gen3 x16 link (Syllo/nvtop#6: "PCIe GEN 1@16x,
    but we know it works at GEN 3"); the power limit is a GTX 1060's 120,000 mW (glances#1523,
    tests/data/energy/gtx1060_pascal.json).
    """

    NVMLError = pynvml.NVMLError

    def __init__(self, unsupported: tuple[str, ...] = ()) -> None:
        self.unsupported = unsupported
        self.readings = {
            "nvmlDeviceGetMaxPcieLinkGeneration": 3,
            "nvmlDeviceGetMaxPcieLinkWidth": 16,
            "nvmlDeviceGetCurrPcieLinkGeneration": 1,
            "nvmlDeviceGetCurrPcieLinkWidth": 16,
            "nvmlDeviceGetEnforcedPowerLimit": 120000,
        }

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        assert uuid == "GPU-5a1c7e2e-0000-0000-0000-000000001080"
        return "handle"

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        if name not in self.readings:
            raise AttributeError(name)

        def call(handle: str) -> int:
            assert handle == "handle"
            if name in self.unsupported:
                raise pynvml.NVMLError_NotSupported()
            return self.readings[name]

        return call


GTX1080TI = Device(id="cuda:0", kind="cuda", name="NVIDIA GeForce GTX 1080 Ti", compute_capability="6.1")
PROPS = SimpleNamespace(uuid="5a1c7e2e-0000-0000-0000-000000001080")


def test_nvml_facts_are_the_links_maximum_and_watts() -> None:
    found = inventory._with_nvml_facts(GTX1080TI, PROPS, nvml=RecordedNvml())
    assert (found.pcie_generation, found.pcie_width) == (3, 16)  # not the idle link's Gen1
    assert found.power_limit_w == 120.0  # 120,000 mW
    assert found.extra == {"pcie_current_generation": 1, "pcie_current_width": 16}


def test_an_unsupported_nvml_reading_leaves_its_field_empty() -> None:
    found = inventory._with_nvml_facts(GTX1080TI, PROPS, nvml=RecordedNvml(unsupported=("nvmlDeviceGetEnforcedPowerLimit",)))
    assert found.power_limit_w is None and found.pcie_generation == 3


@pytest.mark.parametrize(
    ("arch", "capability", "runs"),
    [
        ("sm_80", (8, 6), True),  # same major, later minor
        ("sm_86", (8, 9), True),
        ("sm_86", (8, 0), False),  # never an earlier minor
        ("sm_90", (12, 0), False),  # never another major
        ("sm_120", (12, 0), True),
        ("sm_90a", (9, 0), True),  # "a" targets run on exactly their capability
        ("sm_90a", (10, 0), False),
        ("sm_100a", (10, 3), False),  # not even on a later minor of its family (B300 is 10.3)
        ("sm_100f", (10, 3), True),  # "f" targets run on their family
        ("compute_90", (12, 0), True),  # PTX is compiled for any later GPU
        ("compute_90", (8, 9), False),
    ],
)
def test_which_compiled_architectures_run_on_a_gpu(arch: str, capability: tuple[int, int], runs: bool) -> None:
    assert kernel_runs_on(arch, *capability) is runs


#: torch.cuda.get_arch_list() of a CUDA 12.6 wheel, as torch's own warning prints it on an RTX 5090
#: (FlyMyAI/flymyai-lora-trainer#47, xorbitsai/inference#3603).
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
#: A CUDA 13 wheel: sm_75 to sm_120 (torch 2.13's PYTORCH_RELEASES_CODE_CC for 13.0).
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


def test_a_gpu_without_kernels_in_this_build_is_named_with_the_fix() -> None:
    rtx5090 = Device(id="cuda:0", kind="cuda", name="NVIDIA GeForce RTX 5090", compute_capability="12.0")
    assert missing_kernels(rtx5090, CU126, "2.7.0+cu126") == (
        "torch 2.7.0+cu126 has no kernels for NVIDIA GeForce RTX 5090 (sm_120; it was built for "
        "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90): install a build that has them, "
        "pip install torch --index-url https://download.pytorch.org/whl/cu130"
    )
    assert missing_kernels(rtx5090, CU130, "2.13.0+cu130") is None
    rtx4090 = Device(id="cuda:1", kind="cuda", name="NVIDIA GeForce RTX 4090", compute_capability="8.9")
    assert missing_kernels(rtx4090, CU126, "2.7.0+cu126") is None
    # CUDA 13 dropped Pascal: a GTX 1080 Ti needs the CUDA 12.6 build
    assert missing_kernels(GTX1080TI, CU130, "2.13.0+cu130").endswith("--index-url https://download.pytorch.org/whl/cu126")
    assert missing_kernels(GTX1080TI, [], "2.13.0") is None  # a build that does not say


def _two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda answering as a cu126 build on a PC with an RTX 5090 (cuda:0) and a 4090 (cuda:1)."""
    cards = [
        SimpleNamespace(name="NVIDIA GeForce RTX 5090", total_memory=32 * 1024**3, multi_processor_count=170,
                        major=12, minor=0, L2_cache_size=96 * MiB, uuid=""),
        SimpleNamespace(name="NVIDIA GeForce RTX 4090", total_memory=24 * 1024**3, multi_processor_count=128,
                        major=8, minor=9, L2_cache_size=72 * MiB, uuid=""),
    ]  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: cards[index])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: CU126)
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(inventory, "_nvml", lambda: None)


def test_the_inventory_sets_aside_a_gpu_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    _two_gpus(monkeypatch)
    devices, missing = inventory.list_devices({"brand_raw": "AMD Ryzen 9 7950X"})
    assert [d.id for d in devices] == ["cpu", "cuda:1"]
    assert devices[1].extra["l2_cache_bytes"] == 72 * MiB
    [rtx5090] = [u for u in missing if u.device == "cuda:0"]
    assert rtx5090.probe == "inventory" and "whl/cu130" in rtx5090.reason


def test_asking_for_that_gpu_by_name_is_an_error_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.runner import inventory as run_inventory

    _two_gpus(monkeypatch)
    monkeypatch.setattr(inventory, "read_cpu_info", lambda: {"brand_raw": "AMD Ryzen 9 7950X"})
    monkeypatch.setattr("bench.runner.read_cpu_info", lambda: {"brand_raw": "AMD Ryzen 9 7950X"})
    with pytest.raises(FlopwattError, match=r"^--device cuda:0: torch .* has no kernels for NVIDIA GeForce RTX 5090 .*whl/cu130$"):
        run_inventory("cuda:0")
    _host, chosen, _missing = run_inventory("cuda")
    assert [d.id for d in chosen] == ["cuda:1"]


PROFILER = Path(__file__).parent / "data" / "system_profiler"  # recorded outputs; README.md there names them


def test_an_apple_gpu_is_named_with_the_core_count_macos_reports() -> None:
    """A real M1 Pro's `system_profiler SPDisplaysDataType -json`: 16 GPU cores, so the 16-core row."""
    recorded = (PROFILER / "m1_pro_16_core.json").read_text()
    gpu = inventory.mps_device({"brand_raw": "Apple M1 Pro"}, displays_json=lambda: recorded)
    assert gpu.name == "Apple M1 Pro GPU (16-core)" and gpu.extra == {"gpu_cores": 16}
    card = find_card(gpu.name)
    assert card is not None and card.key == "m1-pro-16c"
    assert dict(card.peak) == {"fp32": 5.2e12} and card.memory_bandwidth == 200e9


def test_a_configuration_without_published_figures_matches_no_row() -> None:
    """A real M1 with the 7-core GPU: Apple's 2.6 TFLOPS is the 8-core's, so no row rather than that one."""
    recorded = (PROFILER / "m1_7_core.json").read_text()
    gpu = inventory.mps_device({"brand_raw": "Apple M1"}, displays_json=lambda: recorded)
    assert gpu.name == "Apple M1 GPU (7-core)" and gpu.extra == {"gpu_cores": 7}
    assert find_card(gpu.name) is None


@pytest.mark.parametrize(
    "output",
    [None, "", "not json", "[]", '{"SPDisplaysDataType": [{"spdisplays_vendor": "sppci_vendor_Apple"}]}',
     '{"SPDisplaysDataType": [{"spdisplays_vendor": "sppci_vendor_AMD", "sppci_cores": "40"}]}',
     '{"SPDisplaysDataType": ["x", {"spdisplays_vendor": "sppci_vendor_Apple", "sppci_cores": "many"}]}'],
)
def test_without_a_core_count_the_name_stays_the_chips_and_matches_no_row(output: str | None) -> None:
    gpu = inventory.mps_device({"brand_raw": "Apple M1 Max"}, displays_json=lambda: output)
    assert gpu.name == "Apple M1 Max GPU" and gpu.extra == {}
    assert find_card(gpu.name) is None


@pytest.mark.parametrize("command", [("flopwatt-no-such-system-profiler",), ("false",)])
def test_a_missing_or_failing_system_profiler_reads_as_no_output(command: tuple[str, ...]) -> None:
    assert inventory.system_profiler_displays(command) is None


def test_the_system_profiler_output_is_the_commands_stdout() -> None:
    recorded = PROFILER / "m1_7_core.json"
    assert inventory.system_profiler_displays(("cat", str(recorded))) == recorded.read_text()
