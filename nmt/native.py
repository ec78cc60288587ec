"""Building the compiled C++ kernels (``nmt/csrc``) on first use, and caching them.

Each extension is compiled by ``torch.utils.cpp_extension.load`` (a C++ compiler and ninja; under a minute the first
time) into a directory per extension, torch version and CPU capability under torch's extension cache
(``TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``), and loaded from there afterwards (rebuilt when its
source, its headers or its flags change). Where one cannot be built :func:`load_extension` returns None and says
why once; its callers keep their Python path, which stays the reference that the tests compare against.

``load`` itself takes about 0.3 s even when nothing is to be built (importing its module, asking ninja), which
translating one line cannot afford (README: start-up adds at most 1 s to torch's import). So each build leaves a
stamp, ``built.json``: the digest of what went into it (source, headers, flags), the module's file and that
file's modification time and size. While the digest matches and the file is the one built, the module is
imported from it directly, in about a millisecond; otherwise ``load`` decides.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
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


def build_digest(source: str) -> str:
    """What a build of ``nmt/csrc/<source>`` depends on besides torch's version and the CPU capability (which
    name its directory): the source, and the flags, which hold the headers' digest."""
    return hashlib.sha256((SOURCES / source).read_bytes() + "\0".join(compile_flags()).encode()).hexdigest()


def _file_stat(path: str) -> list[int]:
    """The modification time (ns) and size of ``path``: a rebuilt file differs in them."""
    status = os.stat(path)
    return [status.st_mtime_ns, status.st_size]


def _import_built(name: str, stamp: Path, digest: str) -> ModuleType | None:
    """The module a build with ``digest`` left (``stamp``), imported from its file; None when there is no such
    build (no stamp, another digest, the file gone) or it does not import."""
    try:
        built = json.loads(stamp.read_text())
        if built["digest"] != digest or built["file_stat"] != _file_stat(built["file"]):
            return None  # another source or flags, or the file rebuilt since (by a version without stamps)
        spec = importlib.util.spec_from_file_location(name, built["file"])
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except (OSError, ValueError, KeyError, ImportError):
        return None


def load_extension(name: str, source: str, fallback: str) -> ModuleType | None:
    """Extension ``name`` compiled from ``nmt/csrc/<source>``, built on first call; None where it cannot be built,
    with a warning that ``fallback`` is used instead."""
    try:
        directory = build_directory(name)
        stamp, digest = directory / "built.json", build_digest(source)
        module = _import_built(name, stamp, digest)
        if module is not None:
            return module
        from torch.utils.cpp_extension import load

        directory.mkdir(parents=True, exist_ok=True)
        lock = directory / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            log.warning("removing %s, left by a build that did not finish", lock)
            lock.unlink(missing_ok=True)
        module = load(
            name=name,
            sources=[str(SOURCES / source)],
            extra_cflags=compile_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            verbose=False,
        )
        if isinstance(module, ModuleType) and module.__file__:
            written = stamp.with_name(f"built.json.{os.getpid()}")  # then renamed: readers never see half
            built = {"digest": digest, "file": module.__file__, "file_stat": _file_stat(module.__file__)}
            written.write_text(json.dumps(built))
            os.replace(written, stamp)
        return module
    except Exception as err:  # no compiler, no ninja, a read-only cache: the fallback computes the same
        log.warning("the compiled %s is unavailable (%s); %s", name, err, fallback)
        return None
