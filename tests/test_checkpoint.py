import hashlib
import io
import os
import pickle
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch
from corpus import digit_config, loaded_after_import

from nmt.checkpoint import (
    CHECKPOINT_DIR,
    MAGIC,
    CheckpointError,
    average_state_dicts,
    checkpoint_path,
    keep_previous,
    kept_checkpoints,
    load_checkpoint,
    remove_stale_temps,
    resolve_checkpoint,
    save_checkpoint,
    step_checkpoints,
    step_name,
)
from nmt.errors import NmtError
from nmt.train.trainer import Trainer, train
from nmt.translate import Translator


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
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil(path: Path, marker: Path) -> None:
    """A well-formed bundle (valid magic and digest) whose payload would run a shell command when unpickled."""
    buffer = io.BytesIO()
    torch.save({"model": RunsCode(marker), "optimizer": {}}, buffer, pickle_module=pickle)
    payload = buffer.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)


def test_pickle_payload_that_runs_code_is_refused(tmp_path):
    write_evil(tmp_path / "evil.pt", tmp_path / "pwned")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


def test_translator_refuses_evil_truncated_and_flipped_checkpoints(digit_model_dir, tmp_path):
    model = model_copy(digit_model_dir, tmp_path)
    best = model / "checkpoints" / "best.pt"
    good = best.read_bytes()
    write_evil(best, tmp_path / "pwned")
    with pytest.raises(CheckpointError, match=f"{best}: refused to load"):
        Translator.from_dir(model, device="cpu")
    assert not (tmp_path / "pwned").exists()
    best.write_bytes(good[: len(good) - 1000])
    with pytest.raises(CheckpointError, match=f"{best}: checksum mismatch"):
        Translator.from_dir(model, device="cpu")
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x10
    best.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=f"{best}: checksum mismatch"):
        Translator.from_dir(model, device="cpu")
    best.write_bytes(good)
    assert Translator.from_dir(model, device="cpu").translate(["one two"])[0].text == "un deux"


@pytest.mark.slow
def test_resume_refuses_an_evil_last_and_falls_back_to_the_previous_state(tmp_path, capsys):
    cfg = digit_config(tmp_path, max_steps=8)  # `last`: steps 4, 8 (validation) and 8 again (end)
    train(cfg)
    ckpt = Path(cfg.run_dir) / "checkpoints"
    write_evil(ckpt / "last.pt", tmp_path / "pwned")
    cfg.resume = True
    capsys.readouterr()
    resumed = Trainer(cfg)
    assert resumed.state.step == 8 and not (tmp_path / "pwned").exists()
    out = capsys.readouterr().out
    assert (
        f"warning: skipped damaged checkpoint (moved to last.pt.damaged): {ckpt / 'last.pt'}: refused" in out
    )
    write_evil(ckpt / "last.prev.pt", tmp_path / "pwned")
    with pytest.raises(NmtError, match="no usable training checkpoint: .*last.prev.pt: refused to load"):
        Trainer(cfg)
    assert not (tmp_path / "pwned").exists()


def test_foreign_file_and_missing_file(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an nmt checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    save_checkpoint({"v": torch.ones(3)}, tmp_path / "a.pt")

    def disk_full(_fileno: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match=r"a.pt: cannot write checkpoint \(No space left on device\)"):
        save_checkpoint({"v": torch.zeros(3)}, tmp_path / "a.pt", fsync=disk_full)
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["v"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]


def test_a_failing_directory_sync_is_reported_after_the_rename(tmp_path):
    def directory_fails(fileno: int) -> None:
        if stat.S_ISDIR(os.fstat(fileno).st_mode):
            raise OSError(5, "Input/output error")
        os.fsync(fileno)

    message = f"a.pt: written, but syncing {tmp_path} failed (Input/output error)"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        save_checkpoint({"v": torch.ones(3)}, tmp_path / "a.pt", fsync=directory_fails)
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["v"], torch.ones(3))  # renamed into place before


def test_remove_stale_temps(tmp_path):
    (tmp_path / ".tmp-last.pt").write_bytes(b"half")
    (tmp_path / "last.pt").write_bytes(b"x")
    assert [p.name for p in remove_stale_temps(tmp_path)] == [".tmp-last.pt"]
    assert os.listdir(tmp_path) == ["last.pt"]


def test_keep_previous_links_the_current_file_aside(tmp_path):
    keep_previous(tmp_path / "last.pt", tmp_path / "last.prev.pt")  # nothing to keep yet
    assert os.listdir(tmp_path) == []
    save_checkpoint({"v": torch.ones(1)}, tmp_path / "last.pt")
    keep_previous(tmp_path / "last.pt", tmp_path / "last.prev.pt")
    save_checkpoint({"v": torch.zeros(1)}, tmp_path / "last.pt")
    assert torch.equal(load_checkpoint(tmp_path / "last.prev.pt")["v"], torch.ones(1))
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["v"], torch.zeros(1))
    assert sorted(os.listdir(tmp_path)) == ["last.prev.pt", "last.pt"]


def test_keep_previous_twice_without_a_write_between_leaves_no_temp(tmp_path):
    # The write after keep_previous was killed: last.prev.pt and last.pt are one file (hard links), and a
    # rename between two links of one file does nothing, which must not leave the temp link behind.
    save_checkpoint({"v": torch.ones(1)}, tmp_path / "last.pt")
    keep_previous(tmp_path / "last.pt", tmp_path / "last.prev.pt")
    keep_previous(tmp_path / "last.pt", tmp_path / "last.prev.pt")
    assert sorted(os.listdir(tmp_path)) == ["last.prev.pt", "last.pt"]


def test_keep_previous_renames_where_hard_links_fail(tmp_path, monkeypatch):
    save_checkpoint({"v": torch.ones(1)}, tmp_path / "last.pt")

    def no_links(*_args):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    keep_previous(tmp_path / "last.pt", tmp_path / "last.prev.pt")
    assert os.listdir(tmp_path) == ["last.prev.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "last.prev.pt")["v"], torch.ones(1))


# ------------------------------------------------------------------------------ a model directory's layout
def test_step_files_are_named_and_listed_in_step_order(tmp_path):
    assert (
        step_name(400) == "step_00000400"
        and checkpoint_path(tmp_path, step_name(400)).name == "step_00000400.pt"
    )
    for step in (1200, 400, 123_456_789, 30):
        checkpoint_path(tmp_path, step_name(step)).write_bytes(b"x")
    (tmp_path / "step_notes.pt").write_bytes(b"x")  # not a step checkpoint
    (tmp_path / "step_00000500.pt.damaged").write_bytes(b"x")
    names = [p.name for p in step_checkpoints(tmp_path)]
    assert names == ["step_00000030.pt", "step_00000400.pt", "step_00001200.pt", "step_123456789.pt"]
    assert step_checkpoints(tmp_path / "missing") == []


def test_resolve_checkpoint_names_files_and_paths(tmp_path):
    ckpt = tmp_path / CHECKPOINT_DIR
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, "best") == ckpt / "last.pt"  # a run that never validated
    (ckpt / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, "best") == ckpt / "best.pt"
    assert resolve_checkpoint(tmp_path, "last.pt") == ckpt / "last.pt"
    assert resolve_checkpoint(tmp_path, str(ckpt / "best.pt")) == ckpt / "best.pt"
    with pytest.raises(
        NmtError, match=r"no checkpoint 'step_00000001' in .*checkpoints \(train a model first\)"
    ):
        resolve_checkpoint(tmp_path, "step_00000001")


def test_kept_checkpoints_and_their_average(tmp_path):
    ckpt = tmp_path / CHECKPOINT_DIR
    with pytest.raises(NmtError, match="average=2, but no step checkpoints are kept there"):
        kept_checkpoints(tmp_path, 2, "average")
    for step, value in ((10, 1.0), (20, 2.0), (30, 6.0)):
        save_checkpoint({"model": {"w": torch.full((2,), value)}}, checkpoint_path(ckpt, step_name(step)))
    kept = kept_checkpoints(tmp_path, 2, "average")
    assert [p.name for p in kept] == ["step_00000020.pt", "step_00000030.pt"]
    assert torch.equal(average_state_dicts(kept, torch.device("cpu"))["w"], torch.full((2,), 4.0))


@pytest.mark.slow
def test_the_layout_names_import_without_torch():
    assert loaded_after_import("nmt.checkpoint", ["torch"]) == []
