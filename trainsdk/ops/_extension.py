"""Build (JIT, cached on disk) and load the compiled ``medcnn`` extension, or say why it is not in use.

The sources live in ``cpp_ext/csrc`` at the repository root. ``torch.utils.cpp_extension.load`` compiles them with
ninja into ``build/medcnn_ext/<tag>/`` under the repository (git-ignored; ``make clean`` removes it), or into
``$MEDCNN_EXT_BUILD_DIR``, or ``~/.cache/medcnn-sdk/ext/<tag>`` when the repository is not writable. ``<tag>``
names torch's version, the Python version, CPU/CUDA and the target CPU, so a different torch or machine never
picks up a stale library. Later loads are a ninja no-op (about a second). Not via pip/setup.py: build isolation
would download a multi-GB CUDA torch just to compile against it.

Environment: ``MEDCNN_NO_EXT=1`` skips the build and uses the pure-PyTorch reference (one warning);
``MEDCNN_EXT_ARCH`` is the ``-march`` value (default ``native``; empty for the compiler's default);
``MEDCNN_EXT_CUDA=0`` leaves the CUDA kernels out of a CUDA torch build; ``MEDCNN_EXT_VERBOSE=1`` shows the
compiler's commands.
"""
from __future__ import annotations

import glob
import hashlib
import os
import platform
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

__all__ = ["ExtensionStatus", "ExtensionBuildError", "load", "extension_status", "on_load", "sources", "build_dir",
           "ENV_DISABLE"]

ENV_DISABLE = "MEDCNN_NO_EXT"
NAME = "medcnn_ext"
ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "cpp_ext" / "csrc"
STALE_LOCK_SECONDS = 15 * 60  # a build killed mid-way leaves torch's lock file behind; others would wait forever


class ExtensionBuildError(RuntimeError):
    """The extension failed to build or load and the reference fallback was not asked for."""


@dataclass(frozen=True)
class ExtensionStatus:
    """Whether the compiled kernels are in use (``compiled``), and if not, why (``reason``)."""

    compiled: bool
    reason: str
    library: str | None = None
    build_dir: str | None = None
    devices: tuple[str, ...] = ()  # device types with compiled kernels: ("cpu",) or ("cpu", "cuda")
    seconds: float = 0.0  # time this process spent building/loading
    rebuilt: bool = False  # this process compiled something (False: the cached library was up to date)
    error: str | None = field(default=None, repr=False)  # full build log when the build failed

    def __str__(self) -> str:
        if self.compiled:
            how = "compiled" if self.rebuilt else "cached"
            return (f"medcnn extension in use ({'+'.join(self.devices)}; {how}, {self.seconds:.2f} s): "
                    f"{self.library}")
        return f"medcnn extension not in use: {self.reason}; using the pure-PyTorch reference ops"


_STATUS: ExtensionStatus | None = None
_HOOKS: list[Callable[[], None]] = []
_LOCK = threading.Lock()  # two threads making their first fused call must not build or register twice


def on_load(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` once the compiled library is loaded (fake kernels, autograd): now if it already is."""
    _HOOKS.append(fn)
    if _STATUS is not None and _STATUS.compiled:
        fn()
    return fn


def _with_cuda() -> bool:
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None and os.environ.get("MEDCNN_EXT_CUDA") != "0"


def sources(with_cuda: bool | None = None) -> list[str]:
    """ops.cpp (schemas) + cpu/*.cpp; with CUDA also cuda/*.cu and cuda/bindings.cpp (never in a CPU build)."""
    with_cuda = _with_cuda() if with_cuda is None else with_cuda
    files = [str(CSRC / "ops.cpp")] + sorted(glob.glob(str(CSRC / "cpu" / "*.cpp")))
    if with_cuda:
        files += sorted(glob.glob(str(CSRC / "cuda" / "*.cu"))) + sorted(glob.glob(str(CSRC / "cuda" / "*.cpp")))
    return files


def _arch() -> str:
    return os.environ.get("MEDCNN_EXT_ARCH", "native")


def _tag(with_cuda: bool) -> str:
    """torch/python/device/CPU identity of a build: a library built for another of these is never reused."""
    cpu = platform.machine()
    if _arch() == "native":
        try:  # the CPU's feature flags decide what -march=native emits
            flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
            cpu += "-" + hashlib.sha1(flags.encode()).hexdigest()[:8]
        except (OSError, StopIteration):
            cpu += "-native"
    dev = f"cu{torch.version.cuda.replace('.', '')}" if with_cuda else "cpu"
    return f"torch{torch.__version__.split('+')[0]}-py{sys.version_info[0]}{sys.version_info[1]}-{dev}-{cpu}"


def build_dir(with_cuda: bool | None = None) -> Path:
    with_cuda = _with_cuda() if with_cuda is None else with_cuda
    base = os.environ.get("MEDCNN_EXT_BUILD_DIR")
    if base:
        return Path(base) / _tag(with_cuda)
    repo_build = ROOT / "build"
    if os.access(ROOT, os.W_OK) and (not repo_build.exists() or os.access(repo_build, os.W_OK)):
        return repo_build / "medcnn_ext" / _tag(with_cuda)
    return Path.home() / ".cache" / "medcnn-sdk" / "ext" / _tag(with_cuda)


def _flags(with_cuda: bool) -> tuple[list[str], list[str], list[str]]:
    cflags = ["-O3", "-fopenmp", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas"]
    if _arch():
        cflags.append(f"-march={_arch()}")
    cuda_flags = ["-O3", "-DMEDCNN_WITH_CUDA"]
    if with_cuda:
        cflags.append("-DMEDCNN_WITH_CUDA")
    return cflags, cuda_flags, ["-fopenmp"]


def _ensure_ninja() -> None:
    """torch runs `ninja` from PATH; a venv's pip-installed ninja is not on PATH unless the venv is active."""
    if shutil.which("ninja"):
        return
    venv_bin = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(venv_bin, "ninja")):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")


def _clear_stale_lock(path: Path) -> None:
    lock = path / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink()
    except OSError:
        pass


def _library_mtime(path: Path) -> float:
    return max((p.stat().st_mtime for p in path.glob(f"{NAME}*.so")), default=0.0)


def _build_and_load() -> ExtensionStatus:
    from torch.utils import cpp_extension

    with_cuda = _with_cuda()
    path = build_dir(with_cuda)
    path.mkdir(parents=True, exist_ok=True)
    _clear_stale_lock(path)
    _ensure_ninja()
    cflags, cuda_flags, ldflags = _flags(with_cuda)
    before = _library_mtime(path)
    t0 = time.perf_counter()
    lib = cpp_extension.load(name=NAME, sources=sources(with_cuda), extra_cflags=cflags, extra_cuda_cflags=cuda_flags,
                             extra_ldflags=ldflags, build_directory=str(path), with_cuda=with_cuda,
                             is_python_module=False, verbose=os.environ.get("MEDCNN_EXT_VERBOSE") == "1")
    seconds = time.perf_counter() - t0
    devices = ("cpu", "cuda") if with_cuda else ("cpu",)
    return ExtensionStatus(True, "loaded", str(lib), str(path), devices, seconds, _library_mtime(path) > before)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln.lower()]  # the compiler's first diagnostic
    return f"{type(e).__name__}: {(errors or lines or [''])[0][:300]}"


def _try_load() -> ExtensionStatus:
    if os.environ.get(ENV_DISABLE, "").strip() not in ("", "0"):
        return ExtensionStatus(False, f"disabled by {ENV_DISABLE}={os.environ[ENV_DISABLE]}")
    if not (CSRC / "ops.cpp").exists():
        return ExtensionStatus(False, f"C++ sources not found at {CSRC} (an install without the repository)")
    try:
        return _build_and_load()
    except Exception as e:  # compiler missing, compile error, load error: reported, and raised by load()
        return ExtensionStatus(False, f"build failed ({_first_line(e)})", build_dir=str(build_dir()), error=str(e))


def load(strict: bool = True) -> ExtensionStatus:
    """Load the extension once per process (building it if needed) and run the registration hooks.

    A failed build raises ``ExtensionBuildError`` when ``strict`` (set ``MEDCNN_NO_EXT=1`` to use the reference
    instead); a disabled or source-less extension warns once and the ops use the reference implementation.
    """
    global _STATUS
    if _STATUS is None:
        with _LOCK:
            if _STATUS is None:
                status = _try_load()
                if status.compiled:
                    for hook in _HOOKS:
                        hook()
                elif status.error is None:
                    warnings.warn(str(status), RuntimeWarning, stacklevel=4)
                _STATUS = status
    if strict and _STATUS.error is not None:
        raise ExtensionBuildError(
            f"the medcnn C++ extension failed to build: {_STATUS.reason}. Install a C++ compiler (gcc/clang with "
            f"OpenMP) and ninja, or set {ENV_DISABLE}=1 to use the pure-PyTorch reference ops.\n{_STATUS.error}")
    return _STATUS


def extension_status() -> ExtensionStatus:
    """Whether the compiled extension is in use and, if not, why (tries to load it; never raises)."""
    return load(strict=False)
