import os
import pickle

import pytest
import torch

from nmt.checkpoint import MAGIC, CheckpointError, load_checkpoint, remove_stale_temps, save_checkpoint


def sample_state() -> dict:
    torch.manual_seed(0)
    return {"model": {"w": torch.randn(3, 4)}, "step": 7, "history": [{"bleu": 1.5}], "name": "x"}


def test_round_trip_is_exact(tmp_path):
    state = sample_state()
    save_checkpoint(state, tmp_path / "a.pt")
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["step"] == 7 and loaded["history"] == [{"bleu": 1.5}] and loaded["name"] == "x"
    assert os.listdir(tmp_path) == ["a.pt"]  # no temp file left behind


def test_overwrite_replaces_whole_file(tmp_path):
    save_checkpoint({"v": torch.zeros(1000)}, tmp_path / "a.pt")
    save_checkpoint({"v": torch.ones(2)}, tmp_path / "a.pt")
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["v"], torch.ones(2))


def test_truncated_file_is_detected(tmp_path):
    save_checkpoint(sample_state(), tmp_path / "a.pt")
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "a.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "a.pt")


def test_bit_flip_is_detected(tmp_path):
    save_checkpoint(sample_state(), tmp_path / "a.pt")
    data = bytearray((tmp_path / "a.pt").read_bytes())
    data[len(data) - 20] ^= 0x01
    (tmp_path / "a.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "a.pt")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_payload_that_runs_code_is_refused(tmp_path):
    # A well-formed bundle (valid magic and digest) whose payload would call os.system when unpickled.
    path = tmp_path / "evil.pt"
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save({"model": RunsCode()}, buffer, pickle_module=pickle)
    payload = buffer.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)


def test_foreign_file_and_missing_file(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an nmt checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"v": torch.ones(3)}, tmp_path / "a.pt")

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        save_checkpoint({"v": torch.zeros(3)}, tmp_path / "a.pt")
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["v"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]


def test_remove_stale_temps(tmp_path):
    (tmp_path / ".tmp-last.pt").write_bytes(b"half")
    (tmp_path / "last.pt").write_bytes(b"x")
    assert [p.name for p in remove_stale_temps(tmp_path)] == [".tmp-last.pt"]
    assert os.listdir(tmp_path) == ["last.pt"]
