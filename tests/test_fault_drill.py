"""The kill-anywhere drill, short: 3 SIGKILLs (in an update, in a validation, in a checkpoint write)."""

import pytest
from hydra import compose, initialize_config_dir

from nmt.cli import CONF_DIR
from nmt.config import FaultDrillConfig, to_object
from nmt.errors import NmtError
from nmt.tools.fault_drill import format_report, run_drill

pytestmark = pytest.mark.slow  # subprocesses and end-to-end runs: minutes, not seconds


def drill_config(work_dir, *overrides: str) -> FaultDrillConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        raw = compose("fault_drill", overrides=[f"work_dir={work_dir}", *overrides])
    return to_object(raw, FaultDrillConfig)


def test_three_kills_resume_to_the_uninterrupted_weights(tmp_path):
    cfg = drill_config(
        tmp_path / "drill",
        "kills=3",
        "synthetic_pairs=300",
        "slow_fsync=0.2",  # a wide write window: the checkpoint kill must land inside it
        "train.max_steps=30",
        "train.validate_every=15",
        "train.checkpoint_every=5",
        "train.val_max_sentences=20",
    )
    report = run_drill(cfg, echo=lambda _: None)
    text = format_report(report)
    assert report.ok, text
    assert [k.aimed for k in report.kills] == ["step", "validation", "checkpoint"]
    assert "kills survived: 3/3" in text
    write = report.kills[2]
    assert write.landed.startswith("saving "), text
    assert any(name.startswith("checkpoints/.tmp-") for name in write.temps), text
    assert report.final_step == report.reference_step == 30
    assert report.compared > 0 and not report.differences and not report.temps_left


def test_drill_refuses_a_clock_budget_and_a_foreign_work_dir(tmp_path):
    with pytest.raises(NmtError, match="train.max_minutes=0"):
        run_drill(drill_config(tmp_path / "a", "train.max_minutes=1"))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(NmtError, match="holds no earlier fault drill"):
        run_drill(drill_config(foreign))
    assert (foreign / "precious.txt").read_text() == "keep me"
