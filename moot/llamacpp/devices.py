"""What llama.cpp runs on here: its devices, whether it can offload layers to a GPU, the cores."""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from typing import Any


@functools.cache
def gpu_offload_supported() -> bool:
    """Whether the installed llama.cpp can offload layers here: a GPU build (CUDA, Metal,
    Vulkan, ROCm...) that found a device. False without llama-cpp-python."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def default_gpu_layers() -> int:
    """`n_gpu_layers` when none is given: every layer (-1) where llama.cpp can offload, none (0)
    on a CPU build. llama.cpp's own default, 0, would leave a GPU build's GPU idle."""
    return -1 if gpu_offload_supported() else 0


def usable_cores() -> int:
    """The cores this process may run on (its affinity), not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Device:
    """A device one of llama.cpp's backends registered."""

    name: str
    """ggml's name for it: "CPU", "CUDA0", "Metal", "Vulkan0"..."""
    description: str
    """What it is, e.g. "NVIDIA GeForce RTX 4090" or the CPU's model name."""
    kind: str
    """CPU, GPU, IGPU (integrated GPU) or ACCEL (BLAS, AMX...)."""
    backend: str
    """The backend that registered it: CPU, CUDA, Metal, Vulkan, ROCm..."""
    memory_gib: float


_DEVICE_KINDS = ("CPU", "GPU", "IGPU", "ACCEL")  # ggml's enum ggml_backend_dev_type, in order


def backend_devices() -> list[Device]:
    """The devices in ggml's backend registry: what llama.cpp was built for and found here
    (llama-cpp-python wraps no registry call, so they are read from its ggml library). Empty
    where that library lacks them."""
    import llama_cpp

    llama_cpp.llama_supports_gpu_offload()  # loads the backends of a build that loads them late
    try:
        from llama_cpp._ggml import libggml
    except (ImportError, OSError):
        return []

    def call(name: str, result: Any, *args: Any) -> Any:
        function = libggml[name]  # a fresh function object: llama_cpp's own are left alone
        function.restype = result
        function.argtypes = [type(arg) for arg in args]
        return function(*args)

    def text(name: str, handle: ctypes.c_void_p) -> str:
        return bytes(call(name, ctypes.c_char_p, handle) or b"").decode(errors="replace")

    devices = []
    try:
        for index in range(call("ggml_backend_dev_count", ctypes.c_size_t)):
            device = ctypes.c_void_p(
                call("ggml_backend_dev_get", ctypes.c_void_p, ctypes.c_size_t(index))
            )
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            call(
                "ggml_backend_dev_memory", None, device, ctypes.pointer(free), ctypes.pointer(total)
            )
            kind = call("ggml_backend_dev_type", ctypes.c_int, device)
            registry = ctypes.c_void_p(
                call("ggml_backend_dev_backend_reg", ctypes.c_void_p, device)
            )
            devices.append(
                Device(
                    name=text("ggml_backend_dev_name", device),
                    description=text("ggml_backend_dev_description", device),
                    kind=_DEVICE_KINDS[kind] if 0 <= kind < len(_DEVICE_KINDS) else str(kind),
                    backend=text("ggml_backend_reg_name", registry),
                    memory_gib=total.value / (1 << 30),
                )
            )
    except AttributeError:  # a ggml older than its device registry
        return []
    return devices
