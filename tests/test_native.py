"""Building and caching the compiled kernels (nmt.native)."""

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
