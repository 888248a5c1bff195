from __future__ import annotations

import pynvml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.metrics.gpu_collector import GPU_FIGURES, GpuCollector
from supervisor.gpu.nvml import Nvml
from tests.support.fake_nvml import FakeGpu, FakeNvml

L40 = FakeGpu(name="NVIDIA L40S", uuid="GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")


def scrape(registry) -> dict[str, list]:
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def collector_for(lib: FakeNvml, refs) -> tuple[CollectorRegistry, Nvml]:
    nvml = Nvml(lib)
    nvml.start()
    registry = CollectorRegistry()
    registry.register(GpuCollector(nvml, lambda: refs))
    return registry, nvml


def test_one_series_per_figure_for_the_workers_gpu_only():
    lib = FakeNvml([FakeGpu(), L40])
    registry, _ = collector_for(lib, [1])
    families = scrape(registry)
    assert families["gpu_server_nvml_up"][0].value == 1
    labels = {"gpu": "1", "uuid": L40.uuid, "name": "NVIDIA L40S"}
    expected = {
        "gpu_server_gpu_utilization_ratio": 0.37,
        "gpu_server_gpu_memory_used_bytes": 20 * 2**30,
        "gpu_server_gpu_memory_total_bytes": 80 * 2**30,
        "gpu_server_gpu_temperature_celsius": 51,
        "gpu_server_gpu_power_watts": 312.5,
    }
    for name, value in expected.items():
        (sample,) = families[name]
        assert sample.labels == labels and sample.value == value, name


def test_a_lost_gpu_has_no_series_and_the_scrape_still_succeeds():
    lib = FakeNvml([FakeGpu(), L40])
    lib.gpus[1].failing["nvmlDeviceGetPowerUsage"] = pynvml.NVMLError_GpuIsLost
    registry, _ = collector_for(lib, [0, 1])
    families = scrape(registry)
    for name, _, _ in GPU_FIGURES:
        assert [s.labels["gpu"] for s in families[f"gpu_server_{name}"]] == ["0"]


def test_without_nvml_only_nvml_up_0():
    lib = FakeNvml([FakeGpu()], init_error=pynvml.NVMLError_LibraryNotFound)
    registry, _ = collector_for(lib, [0])
    families = scrape(registry)
    assert families["gpu_server_nvml_up"][0].value == 0
    assert all(families.get(f"gpu_server_{name}", []) == [] for name, _, _ in GPU_FIGURES)


def test_a_figure_the_gpu_does_not_offer_has_no_series():
    lib = FakeNvml([FakeGpu()])
    lib.gpus[0].failing["nvmlDeviceGetPowerUsage"] = pynvml.NVMLError_NotSupported
    registry, _ = collector_for(lib, [0])
    families = scrape(registry)
    assert families.get("gpu_server_gpu_power_watts", []) == []
    assert len(families["gpu_server_gpu_memory_used_bytes"]) == 1


def test_registration_does_not_touch_nvml():
    lib = FakeNvml([FakeGpu()])
    nvml = Nvml(lib)
    nvml.start()
    calls = lib.calls
    CollectorRegistry().register(GpuCollector(nvml, lambda: [0]))
    assert lib.calls == calls
