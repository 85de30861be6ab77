"""GPU identification: exact names, MIG instances, CUDA_VISIBLE_DEVICES, capacity from NVML."""

from __future__ import annotations

import sys

import pytest
from fake_pynvml import FakeGpu, FakeNvml, GiB

from llmbench.hardware import detect, gpu_spec, lookup, visible_nvml_indices
from llmbench.measure.reduce import peak_flops


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H200", "h200-141gb"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm-80gb"),
        ("NVIDIA H100 PCIe", "h100-pcie-80gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"),
        ("NVIDIA L4", "l4-24gb"),
        ("h200", "h200-141gb"),  # an alias
    ],
)
def test_exact_names_find_their_row(name, key):
    assert gpu_spec(name).key == key


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA H200 NVL",  # PCIe card, lower power and peak
        "NVIDIA GH200 480GB",  # Grace Hopper superchip
        "NVIDIA H100 NVL",
        "NVIDIA L40",  # not the L40S
        "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
    ],
)
def test_near_names_get_no_row_and_no_peak(name):
    spec, why = lookup(name)
    assert spec is None and why
    peak, reason = peak_flops(name, "bf16")
    assert peak is None and reason


def test_a_mig_instance_has_a_null_peak_with_the_reason():
    peak, reason = peak_flops("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16")
    assert peak is None and "MIG instance" in reason


@pytest.fixture
def install(monkeypatch):
    def install(fake: FakeNvml) -> FakeNvml:
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return install


def two_gpus_with_mig() -> list[FakeGpu]:
    return [
        FakeGpu(uuid="GPU-aaaa-0000", name="NVIDIA H100 80GB HBM3"),
        FakeGpu(
            uuid="GPU-bbbb-1111",
            name="NVIDIA H100 80GB HBM3",
            mig=[
                ("MIG-1111-aaaa", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"),
                ("MIG-2222-bbbb", "NVIDIA H100 80GB HBM3 MIG 3g.40gb"),
            ],
        ),
    ]


@pytest.mark.parametrize(
    ("visible", "index", "name"),
    [
        ("MIG-2222-bbbb", 1, "NVIDIA H100 80GB HBM3 MIG 3g.40gb"),
        ("MIG-GPU-bbbb-1111/1/0", 1, "NVIDIA H100 80GB HBM3"),  # pre-R470 form: its GPU
    ],
)
def test_mig_uuids_in_cuda_visible_devices_are_gpus_not_the_cpu(
    install, monkeypatch, visible, index, name
):
    fake = install(FakeNvml(two_gpus_with_mig()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    fake.nvmlInit()
    assert visible_nvml_indices(fake, 2) == [index]
    fake.nvmlShutdown()
    accel = detect()
    assert accel.kind == "cuda" and accel.count == 1
    assert accel.names == (name,) and accel.nvml_indices == (index,)


def test_device_capacity_comes_from_nvml_not_the_table(install, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    install(FakeNvml([FakeGpu(name="NVIDIA H200", memory_total_bytes=143_771 * 2**20)]))
    accel = detect()
    assert accel.memory_total_bytes == (143_771 * 2**20,)  # the table says 141 GiB
    assert gpu_spec("NVIDIA H200").memory_bytes == 141 * GiB
    assert accel.to_dict()["memory_total_bytes"] == [143_771 * 2**20]
