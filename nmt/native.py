"""Building the compiled C++ kernels (``nmt/csrc``) on first use, and caching them.

Each extension is compiled by ``torch.utils.cpp_extension.load`` (a C++ compiler and ninja; under a minute the first
time) into a directory per extension, torch version and CPU capability under torch's extension cache
(``TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``), and loaded from there afterwards (rebuilt when its
source, its headers or its flags change). Where one cannot be built :func:`load_extension` returns None and says
why once; its callers keep their Python path, which stays the reference that the tests compare against.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

SOURCES = Path(__file__).parent / "csrc"
# A build holds a lock file in its directory; one left by a killed build would make every later load wait on it
# forever. A build takes under a minute, so a lock this old is stale.
STALE_LOCK_SECONDS = 600

# The vector instructions a build may use, by the CPU capability torch itself detected (and dispatches its own
# kernels to): the kernels are written for the compiler to vectorize, 8 floats at a time with AVX2, 16 with
# AVX-512 (1.7x faster than AVX2 on the attention energies, measured on this project's 2-core Xeon).
VECTOR_FLAGS = {
    "AVX2": ["-mavx2", "-mfma"],
    "AVX512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mfma", "-mprefer-vector-width=512"],
}


def cpu_capability() -> str:
    """torch's CPU capability here: ``DEFAULT``, ``AVX2``, ``AVX512`` (x86), or another name elsewhere."""
    return torch.backends.cpu.get_cpu_capability()


def build_directory(name: str) -> Path:
    """Where extension ``name`` is built and cached: one directory per torch version and CPU capability (a cache
    shared between machines never loads code built for instructions the CPU lacks)."""
    cache = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(cache) / f"{name}-torch{torch.__version__}-{cpu_capability()}"


def compile_flags() -> list[str]:
    """-fopenmp: ``at::parallel_for`` splits a kernel's rows between torch's threads (in the OpenMP runtime torch
    loaded, found by its soname) and the ``omp simd`` reductions vectorize; -fno-trapping-math: the clamps in
    ``vector_math.h`` become vector min / max (floating-point traps are off in any case). The headers' digest
    is a flag too, so that ``load`` (which hashes the sources and flags) rebuilds when a header changes."""
    headers = hashlib.sha256(b"".join(path.read_bytes() for path in sorted(SOURCES.glob("*.h"))))
    return [
        "-O3",
        "-fopenmp",
        "-fno-trapping-math",
        *VECTOR_FLAGS.get(cpu_capability(), []),
        f"-DNMT_HEADERS_DIGEST={headers.hexdigest()[:16]}",
    ]


def load_extension(name: str, source: str, fallback: str) -> ModuleType | None:
    """Extension ``name`` compiled from ``nmt/csrc/<source>``, built on first call; None where it cannot be built,
    with a warning that ``fallback`` is used instead."""
    try:
        from torch.utils.cpp_extension import load

        directory = build_directory(name)
        directory.mkdir(parents=True, exist_ok=True)
        lock = directory / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            log.warning("removing %s, left by a build that did not finish", lock)
            lock.unlink(missing_ok=True)
        return load(
            name=name,
            sources=[str(SOURCES / source)],
            extra_cflags=compile_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            verbose=False,
        )
    except Exception as err:  # no compiler, no ninja, a read-only cache: the fallback computes the same
        log.warning("the compiled %s is unavailable (%s); %s", name, err, fallback)
        return None
