"""What the benchmark scripts share: this checkout on ``sys.path``, the flags they repeat, the machine, the result.

A script here imports it before the engine (``from bench import ...``; a script's own folder is
``sys.path[0]``): that puts this checkout's root first on ``sys.path``, so ``rlhf_engine`` is the one beside
the script, and this folder too (``turns``, ``compare_trl``). Named ``bench``, not ``common``, because
``benchmarks/peer/common.py`` is the TRL scripts' own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
TESTS = ROOT / "tests"


def on_path(*folders: Path) -> None:
    """Put ``folders`` first on ``sys.path``, in the order given."""
    for folder in reversed(folders):
        sys.path.insert(0, str(folder))


on_path(ROOT)
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(1, str(BENCHMARKS))


# ---------------------------------------------------------------------------------------------- flags

def timing_flags(parser: argparse.ArgumentParser, flag: str = "--iterations", default: int = 5,
                 unit: str = "iterations") -> None:
    """The measured steps (``flag``) and ``--warmup``: the steps run first and not counted."""
    parser.add_argument(flag, type=int, default=default, help=f"measured {unit} after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)


def threads_flag(parser: argparse.ArgumentParser, default: int = 0) -> None:
    """``--threads``: torch's thread count (0 = torch's default); :func:`set_threads` applies it."""
    parser.add_argument("--threads", type=int, default=default, help="torch threads (0 = torch's default)")


def set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def out_flag(parser: argparse.ArgumentParser) -> None:
    """``--out``: a file for the JSON result (printed either way; :func:`write_result`)."""
    parser.add_argument("--out", type=Path)


# ---------------------------------------------------------------------------------------------- results

def peak_rss_bytes() -> int:
    """The highest resident memory of this process so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON, one newline at the end."""
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_result(result: dict, out: Path | None) -> None:
    """Print the result as indented JSON, and write it to ``out`` when given."""
    if out:
        write_json(out, result)
    print(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------- the machine

def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    return _cpuinfo("flags").split()


def machine_line(cores: int | None = None) -> str:
    """One line for a result's ``machine``: the architecture and the cores (default: ``os.cpu_count()``)."""
    return f"{platform.processor() or platform.machine()}, {cores or os.cpu_count()} cores"


def machine() -> dict:
    """The machine in more detail: CPU model, cores, the vector instructions (AVX-512 or not), Python, torch."""
    import torch

    flags = cpu_flags()
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "avx512": any(f.startswith("avx512") for f in flags),
            "vector_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def _cpuinfo(field: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
