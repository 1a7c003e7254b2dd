"""The few CUDA runtime calls the TensorRT runner needs, through ctypes over ``libcudart`` (as Polygraphy does).

Device memory, streams and async copies are all TensorRT asks of its host; getting them from torch, pycuda or cupy
would pull a second GPU stack into a process that only wants to run an engine. The library is loaded on first use,
never at import, and its absence raises ``BackendUnavailableError`` naming what to install.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import BackendUnavailableError, DeploySDKError
from .onnxrt import parse_device

__all__ = ["CudaError", "device_index", "DeviceInfo", "DeviceBuffer", "Stream", "cudart", "set_device", "device_info",
           "memcpy_htod_async", "memcpy_dtoh_async", "LIBRARY_NAMES"]

# The unversioned name first (a CUDA toolkit), then the sonames of the runtimes TensorRT 10/11 wheels are built on.
LIBRARY_NAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
_H2D, _D2H = 1, 2  # cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost
_NON_BLOCKING = 1  # cudaStreamNonBlocking: no implicit sync with the legacy default stream other code may use
_CC_MAJOR, _CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor/Minor (stable enum values)
_NO_DEVICE_ERRORS = {35, 100}  # cudaErrorInsufficientDriver (also: no driver at all), cudaErrorNoDevice
_lib = None
_lock = threading.Lock()


class CudaError(DeploySDKError, RuntimeError):
    """A CUDA runtime call failed after the library loaded (out of memory, bad pointer, device fault)."""


def _wheel_candidates() -> list[str]:
    """libcudart shipped by NVIDIA's pip wheels (nvidia/cuda_runtime/lib, nvidia/cu13/lib): not on the loader path."""
    found = []
    for base in sys.path:
        found += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libcudart.so*")))
    return found


def _declare(lib) -> None:
    c_int_p, c_void_pp = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_void_p)
    sigs = {"cudaMalloc": [c_void_pp, ctypes.c_size_t], "cudaFree": [ctypes.c_void_p],
            "cudaMemcpyAsync": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p],
            "cudaStreamCreateWithFlags": [c_void_pp, ctypes.c_uint], "cudaStreamDestroy": [ctypes.c_void_p],
            "cudaStreamSynchronize": [ctypes.c_void_p], "cudaSetDevice": [ctypes.c_int],
            "cudaGetDeviceCount": [c_int_p], "cudaDeviceGetAttribute": [c_int_p, ctypes.c_int, ctypes.c_int],
            "cudaRuntimeGetVersion": [c_int_p], "cudaDriverGetVersion": [c_int_p]}
    for name, args in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    for name in ("cudaGetErrorName", "cudaGetErrorString"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [ctypes.c_int], ctypes.c_char_p


def _suits_driver(lib) -> bool:
    """A CUDA 13 runtime on a CUDA 12 driver fails every call; prefer a runtime whose major the driver supports."""
    runtime, driver = ctypes.c_int(0), ctypes.c_int(0)
    if lib.cudaRuntimeGetVersion(ctypes.byref(runtime)) or lib.cudaDriverGetVersion(ctypes.byref(driver)):
        return False
    return driver.value == 0 or runtime.value // 1000 <= driver.value // 1000  # no driver: any is as good


def cudart():
    """The loaded CUDA runtime library (loaded once per process, on first call)."""
    global _lib
    with _lock:
        if _lib is None:
            tried = []
            for name in list(LIBRARY_NAMES) + _wheel_candidates():
                try:
                    lib = ctypes.CDLL(name)
                except OSError as e:
                    tried.append(f"{name} ({str(e).split(':')[-1].strip()})")
                    continue
                _declare(lib)
                if _lib is None:  # the first that loads, unless a later one suits the driver better
                    _lib = lib
                if _suits_driver(lib):
                    _lib = lib
                    break
            if _lib is None:
                raise BackendUnavailableError(
                    "the TensorRT backend needs the CUDA runtime library (libcudart), and none loaded: tried "
                    f"{', '.join(tried)}. Install an NVIDIA driver plus the CUDA runtime (a CUDA toolkit, or "
                    "`pip install nvidia-cuda-runtime-cu12` to match tensorrt-cu12)")
    return _lib


def _check(code: int, what: str, *, no_device: bool = False) -> None:
    """Raise for a non-zero cudaError_t: BackendUnavailableError when there is no usable GPU, else CudaError."""
    if code == 0:
        return
    lib = cudart()
    name, text = lib.cudaGetErrorName(code).decode(), lib.cudaGetErrorString(code).decode()
    if no_device or code in _NO_DEVICE_ERRORS:
        raise BackendUnavailableError(f"{what}: {name} ({text}); the TensorRT backend needs a working NVIDIA GPU "
                                      "and driver")
    raise CudaError(f"{what} failed: {name} ({text})")


def set_device(index: int) -> None:
    """Make ``index`` the current device of the calling thread (CUDA's current device is per thread)."""
    lib = cudart()
    count = ctypes.c_int(0)
    _check(lib.cudaGetDeviceCount(ctypes.byref(count)), "cudaGetDeviceCount", no_device=True)
    if not 0 <= index < count.value:
        raise BackendUnavailableError(f"CUDA device {index} asked for, this machine has {count.value} "
                                      f"(cuda:0..cuda:{count.value - 1})")
    _check(lib.cudaSetDevice(index), f"cudaSetDevice({index})")


def device_index(device) -> int:
    """0, ``"cuda"`` or ``"cuda:N"`` -> N. TensorRT has no CPU mode, so ``"cpu"`` is unavailable, not a typo."""
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise ValueError(f"device must be a GPU index >= 0 or 'cuda:N', got {device}")
        return device
    kind, index = parse_device(str(device))
    if kind != "cuda":
        raise BackendUnavailableError(f"TensorRT runs on CUDA GPUs only; device {device!r} was asked for (use "
                                      "'cuda' or 'cuda:N', or the onnxruntime backend on the CPU)")
    return index


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is tied to: the GPU model and its compute capability; plus the CUDA versions, for the record."""

    index: int
    name: str
    compute_capability: str  # "8.6"
    cuda_runtime: int  # e.g. 12040 for 12.4
    cuda_driver: int


def device_info(index: int = 0) -> DeviceInfo:
    lib = cudart()
    set_device(index)
    major, minor, rt, drv = (ctypes.c_int(0) for _ in range(4))
    _check(lib.cudaDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, index), "cudaDeviceGetAttribute")
    _check(lib.cudaDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, index), "cudaDeviceGetAttribute")
    lib.cudaRuntimeGetVersion(ctypes.byref(rt))
    lib.cudaDriverGetVersion(ctypes.byref(drv))
    # cudaDeviceProp begins with `char name[256]` in every CUDA version; the rest of its layout varies, so the buffer
    # is far larger than any version's struct and only the name is read. CUDA 12 exports the current layout as _v2.
    props = ctypes.create_string_buffer(16384)
    fn = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
    _check(fn(props, index), "cudaGetDeviceProperties")
    name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
    return DeviceInfo(index, name, f"{major.value}.{minor.value}", rt.value, drv.value)


class Stream:
    """A non-blocking CUDA stream; ``handle`` is what TensorRT's ``execute_async_v3`` takes."""

    def __init__(self):
        ptr = ctypes.c_void_p()
        _check(cudart().cudaStreamCreateWithFlags(ctypes.byref(ptr), _NON_BLOCKING), "cudaStreamCreateWithFlags")
        self._ptr = ptr

    @property
    def handle(self) -> int:
        return int(self._ptr.value or 0)

    def synchronize(self) -> None:
        _check(cudart().cudaStreamSynchronize(self._ptr), "cudaStreamSynchronize")

    def free(self) -> None:
        if self._ptr is not None and self._ptr.value:
            cudart().cudaStreamDestroy(self._ptr)
        self._ptr = None


class DeviceBuffer:
    """Device memory that only grows: a run with a smaller batch reuses the allocation of a larger one."""

    def __init__(self):
        self.ptr, self.nbytes = 0, 0

    def reserve(self, nbytes: int) -> int:
        """Make room for ``nbytes`` (at least 1, so even an empty tensor has a valid address); return the pointer."""
        nbytes = max(int(nbytes), 1)
        if nbytes > self.nbytes:
            self.free()
            ptr = ctypes.c_void_p()
            _check(cudart().cudaMalloc(ctypes.byref(ptr), nbytes), f"cudaMalloc({nbytes} bytes)")
            self.ptr, self.nbytes = int(ptr.value), nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            cudart().cudaFree(ctypes.c_void_p(self.ptr))
        self.ptr, self.nbytes = 0, 0


def memcpy_htod_async(dst: int, src: np.ndarray, stream: Stream) -> None:
    """Copy a C-contiguous host array to device memory on ``stream``; ``src`` must live until the stream syncs."""
    _check(cudart().cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src.ctypes.data), src.nbytes, _H2D,
                                    ctypes.c_void_p(stream.handle)), "cudaMemcpyAsync (host to device)")


def memcpy_dtoh_async(dst: np.ndarray, src: int, stream: Stream) -> None:
    """Copy device memory into a C-contiguous host array on ``stream``; read ``dst`` only after the stream syncs."""
    _check(cudart().cudaMemcpyAsync(ctypes.c_void_p(dst.ctypes.data), ctypes.c_void_p(src), dst.nbytes, _D2H,
                                    ctypes.c_void_p(stream.handle)), "cudaMemcpyAsync (device to host)")
