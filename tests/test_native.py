"""Building and caching the compiled kernels (nmt.native)."""

import importlib.util
import json
import os
import time

import torch
import torch.utils.cpp_extension

from nmt import native


def test_a_stale_lock_is_removed_and_a_failed_build_falls_back(tmp_path, monkeypatch, caplog) -> None:
    """A lock left by a killed build would make ``load`` wait forever: an old one is removed first. A build
    that fails gives None and a warning naming the fallback, never an exception."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    directory = native.build_directory("nmt_kernels")
    assert directory.parent == tmp_path
    assert directory.name == f"nmt_kernels-torch{torch.__version__}-{native.cpu_capability()}"
    directory.mkdir()
    lock = directory / "lock"
    lock.touch()
    old = time.time() - native.STALE_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    calls = []

    def fake_load(**kwargs):
        calls.append(kwargs)
        return "built"

    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake_load)
    assert native.load_extension("nmt_kernels", "rnn_loops.cpp", "the Python loops") == "built"
    assert not lock.exists() and calls[0]["build_directory"] == str(directory)
    assert calls[0]["sources"] == [str(native.SOURCES / "rnn_loops.cpp")]

    lock.touch()  # a fresh lock: another process is building, so load waits on it
    native.load_extension("nmt_kernels", "rnn_loops.cpp", "the Python loops")
    assert lock.exists()

    def failing_load(**kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", failing_load)
    with caplog.at_level("WARNING"):
        assert native.load_extension("nmt_kernels", "rnn_loops.cpp", "training uses the Python loops") is None
    assert "nmt_kernels is unavailable (no compiler); training uses the Python loops" in caplog.text


def test_the_flags_follow_the_cpu_capability_and_the_headers(tmp_path, monkeypatch) -> None:
    """Vector instructions only where torch found them; a changed header changes the flags, which ``load``
    hashes, so that the extension is rebuilt."""
    monkeypatch.setattr(native, "cpu_capability", lambda: "DEFAULT")
    assert not any(flag.startswith("-mavx") for flag in native.compile_flags())
    monkeypatch.setattr(native, "cpu_capability", lambda: "AVX2")
    assert {"-mavx2", "-mfma"} <= set(native.compile_flags())
    monkeypatch.setattr(native, "cpu_capability", lambda: "AVX512")
    assert "-mavx512f" in native.compile_flags()

    before = native.compile_flags()
    (tmp_path / "vector_math.h").write_text("// changed\n")
    monkeypatch.setattr(native, "SOURCES", tmp_path)
    after = native.compile_flags()
    assert [f for f in before if "DIGEST" not in f] == [f for f in after if "DIGEST" not in f]
    assert before != after


def test_a_build_leaves_a_stamp_and_later_loads_import_its_file_without_load(tmp_path, monkeypatch) -> None:
    """``load`` costs about 0.3 s even with nothing to build; a build's stamp lets later loads import the module
    file directly while the source and the flags are those it was built from, and sends them to ``load`` again
    once either changes."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    sources = tmp_path / "csrc"
    sources.mkdir()
    (sources / "kernels.cpp").write_text("// version 1\n")
    monkeypatch.setattr(native, "SOURCES", sources)
    built_file = tmp_path / "nmt_kernels_built.py"  # stands for the shared library a build writes
    built_file.write_text("ANSWER = 42\n")
    calls = []

    def fake_load(**kwargs):
        calls.append(kwargs)
        spec = importlib.util.spec_from_file_location("nmt_kernels", built_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake_load)
    assert native.load_extension("nmt_kernels", "kernels.cpp", "the Python loops").ANSWER == 42
    stamp = json.loads((native.build_directory("nmt_kernels") / "built.json").read_text())
    status = built_file.stat()
    assert stamp == {
        "digest": native.build_digest("kernels.cpp"),
        "file": str(built_file),
        "file_stat": [status.st_mtime_ns, status.st_size],
    }
    assert len(calls) == 1

    module = native.load_extension("nmt_kernels", "kernels.cpp", "the Python loops")
    assert module.ANSWER == 42 and len(calls) == 1  # imported from the stamp's file, no load

    built_file.write_text("ANSWER = 430\n")  # rebuilt by a version of nmt that writes no stamp
    assert native.load_extension("nmt_kernels", "kernels.cpp", "the Python loops").ANSWER == 430
    assert len(calls) == 2  # the file changed since the stamp: load decides (and writes a new stamp)
    native.load_extension("nmt_kernels", "kernels.cpp", "the Python loops")
    assert len(calls) == 2

    (sources / "kernels.cpp").write_text("// version 2\n")
    native.load_extension("nmt_kernels", "kernels.cpp", "the Python loops")
    assert len(calls) == 3  # another source: built again

    (native.build_directory("nmt_kernels") / "built.json").write_text("{not json")
    assert native.load_extension("nmt_kernels", "kernels.cpp", "the Python loops").ANSWER == 430
    assert len(calls) == 4  # a damaged stamp: load decides
