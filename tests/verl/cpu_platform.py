"""Test-only CPU platform for verl 0.9.1's training side (never imported by the product).

verl 0.9.1 has no CPU platform and registers its FSDP engines for cuda/npu only. This module
registers, through verl's own registries (no fork):

* ``PlatformRegistry.register("cpu")``: a :class:`PlatformBase` whose device is ``cpu``,
  device calls are no-ops, collectives go over ``gloo`` and Ray resources are ``CPU``;
  selected with ``VERL_PLATFORM=cpu`` (``verl/plugin/platform/platform_manager.py``,
  ``_detect_platform_name``) before any verl module reads the platform;
* ``EngineRegistry.register(..., device="cpu")`` for verl's own ``FSDPEngineWithLMHead`` and
  ``FSDPEngineWithValueHead`` (``verl/workers/engine/fsdp/transformer_impl.py``), backends
  ``fsdp`` and ``fsdp2`` (FSDP1 itself needs a GPU: ``sync_module_states``).

Importing it makes this process's platform the CPU one (verl's ``set_platform``), before any
verl module reads it; Ray workers started afterwards keep verl's own detection (they do not
import this module, and ``VERL_PLATFORM`` would reach them through the environment).
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import torch

from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry, set_platform  # noqa: E402


class _CPUDeviceModule(ModuleType):
    """``torch.cpu`` plus the memory queries verl makes of ``torch.cuda`` (logging, cache
    clearing), answering 0: the CPU has no device allocator to report on."""

    _ZERO = ("memory_allocated", "memory_reserved", "max_memory_allocated",
             "max_memory_reserved")
    _NOOP = ("empty_cache", "reset_peak_memory_stats", "reset_max_memory_allocated", "ipc_collect")

    def __getattr__(self, name: str) -> Any:
        if name in self._ZERO:
            return lambda *a, **k: 0
        if name in self._NOOP:
            return lambda *a, **k: None
        if name == "get_device_name":  # verl's flops table knows "CPU" (utils/flops_counter.py)
            return lambda *a, **k: "CPU"
        if name in ("get_rng_state", "set_rng_state"):  # the CPU generator is torch's own
            return getattr(torch, name)
        if name == "mem_get_info":
            return lambda *a, **k: (0, 0)
        return getattr(torch.cpu, name)


CPU_DEVICE = _CPUDeviceModule("verl_cpu_device")


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    """One CPU "device": what verl's FSDP engine and workers ask of a platform."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return CPU_DEVICE

    def is_available(self) -> bool:
        return True

    def current_device(self) -> str:  # type: ignore[override]
        # torch.cpu's own answer: ``model.to(device=get_device_id())`` must stay on the CPU
        # (an int would name an accelerator)
        return torch.cpu.current_device()

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return (None, None)

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def register_engines() -> None:
    """verl's FSDP engines for ``device="cpu"`` (idempotent)."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import (
        FSDPEngineWithLMHead,
        FSDPEngineWithValueHead,
    )

    for model_type, cls in (("language_model", FSDPEngineWithLMHead),
                            ("value_model", FSDPEngineWithValueHead)):
        if "cpu" not in EngineRegistry._engines.get(model_type, {}).get("fsdp2", {}):
            EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"],
                                    device="cpu")(cls)


def use_cpu_platform() -> None:
    """This process's verl platform: :class:`PlatformCPU` (verl's ``set_platform``)."""
    set_platform(PlatformRegistry.get("cpu")())
