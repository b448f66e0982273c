"""The environment a number was computed in: package versions, the CPU and the instruction set
torch dispatches to, thread settings and the GPU. Floating-point results depend on all of these
(a torch release or an AVX-512 machine moves a smoke metric in its 5th digit), so anything that
records results to compare later records this beside them.

``describe()`` is cheap (no Ray, no CUDA initialisation beyond asking for a device name) and
returns plain JSON values. ``numeric_key()`` is the part of it that decides whether two machines
should produce bit-identical numbers."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# The libraries whose versions change floating-point results of the workloads (torch and its
# kernels, numpy/scipy/scikit-learn for the statistics, pandas/pyarrow for what is read back).
NUMERIC_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "tiktoken")
# Thread settings read from the environment; they change reduction orders.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
                    "ATEN_CPU_CAPABILITY", "MKL_CBWR")


def package_versions(names=NUMERIC_PACKAGES + ("ray",)) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux, sysctl on macOS), with its family and
    model numbers where the name alone does not tell generations apart ("AMD EPYC")."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        name = info.get("model name") or info.get("Model") or platform.processor()
        if "cpu family" in info:
            name += f" (family {info['cpu family']} model {info.get('model', '?')})"
        return name
    except OSError:
        return platform.processor() or platform.machine()


def blas_info() -> list[dict]:
    """numpy's BLAS as threadpoolctl sees it: library, kernel architecture, threads."""
    try:
        import numpy  # noqa: F401  (loads its BLAS so that threadpoolctl finds it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in threadpool_info() if p.get("user_api") == "blas"]


def cpu_capability_from_flags() -> str:
    """The instruction set torch would dispatch to, read from the CPU's flags without importing
    torch (ATEN_CPU_CAPABILITY, when set, wins as it does in torch): AVX512, AVX2 or DEFAULT."""
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    if forced:
        return forced.upper()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return "unknown"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "AVX512"
    return "AVX2" if {"avx2", "fma"} <= flags else "DEFAULT"


def describe(import_torch: bool = True) -> dict:
    """Everything that decides a floating-point result, as plain JSON values. With
    ``import_torch=False`` (a driver that has not loaded torch: it costs seconds and 600 MB) the
    instruction set comes from the CPU's flags and torch's thread counts are left out."""
    env = {
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "packages": package_versions(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "variables": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "blas": blas_info(),
    }
    if not import_torch and "torch" not in sys.modules:
        env["torch_cpu_capability"] = cpu_capability_from_flags()
        env["gpu"] = gpu_names()
        return env
    try:
        import torch
    except ImportError:
        return env
    env["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    env["torch_threads"] = torch.get_num_threads()
    env["torch_interop_threads"] = torch.get_num_interop_threads()
    env["gpu"] = gpu_names()
    return env


def gpu_names() -> str | None:
    """The GPUs' names from nvidia-smi (asking torch would create a CUDA context in the driver,
    holding GPU memory for the whole run); None without NVIDIA GPUs."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if not names or out.returncode != 0:
        return None
    return ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names))


# Generated outputs kept in the repository: a change there is not a change of the code (``make
# results`` writes them, so a second study run from the same checkout would otherwise read as dirty).
NOT_CODE = ("docs/results",)


def code_version(root: Path | None = None) -> dict:
    """The code a result came from: the git commit of the checkout overnight runs from (``root``,
    default this one), whether its tracked files had uncommitted changes outside the generated
    outputs (NOT_CODE), and overnight's version. No git (an installed package): the commit is None."""
    from orchestrator.version import __version__

    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    out: dict[str, str | bool | None] = {"commit": None, "dirty": None, "overnight": __version__}
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return out
    try:
        head = subprocess.run([git, "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run([git, "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "."]
                                + [f":(exclude){p}" for p in NOT_CODE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return out
    if head.returncode == 0:
        out["commit"] = head.stdout.strip()
        out["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    return out


def numeric_key(env: dict) -> dict:
    """What must match for two runs of the same code to give bit-identical numbers: the numeric
    packages, Python, the platform, the CPU (model and the instruction set torch dispatches to),
    the BLAS kernels and the thread settings. Not the core count, nor Ray's version."""
    return {
        "python": ".".join(env.get("python", "").split(".")[:2]),
        "platform": env.get("platform"),
        "packages": {k: v for k, v in env.get("packages", {}).items() if k in NUMERIC_PACKAGES},
        "cpu": env.get("cpu"),
        "torch_cpu_capability": env.get("torch_cpu_capability"),
        "variables": env.get("variables", {}),
        # the kernels numpy's (and scipy's) BLAS dispatch to; their versions follow the packages'
        "blas": sorted({f"{b.get('internal_api')}:{b.get('architecture')}" for b in env.get("blas", [])}),
    }


def differences(recorded: dict, here: dict) -> list[str]:
    """One 'what: recorded -> here' line per field of numeric_key that differs."""
    a, b = numeric_key(recorded), numeric_key(here)
    out = []
    for field in a.keys() | b.keys():
        x, y = a.get(field), b.get(field)
        if isinstance(x, dict) and isinstance(y, dict):
            out += [f"{k}: {x.get(k)} -> {y.get(k)}" for k in sorted(x.keys() | y.keys()) if x.get(k) != y.get(k)]
        elif x != y:
            out.append(f"{field}: {x} -> {y}")
    return sorted(out)
