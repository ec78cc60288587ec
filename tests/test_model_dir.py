import importlib.metadata
import shutil
from pathlib import Path

import pytest
import yaml
from corpus import digit_config
from omegaconf import OmegaConf

import nmt
from nmt.config import Config, ModelConfig, SearchConfig
from nmt.errors import NmtError
from nmt.model_dir import (
    MODEL_DIR_FORMAT,
    package_version,
    read_model_config,
    upgrade_config,
    write_model_config,
)
from nmt.translate import Translator

FIXTURE = Path(__file__).parent / "fixtures" / "model_dir_v2"

# tests/fixtures/make_model_dir_fixture.py printed these once; they must never change: (input, output, score)
PINNED = {
    1: [
        ("three one four", "trois un quatre", -0.816980),
        ("one five nine two six", "un cinq neuf un", -1.126472),
        ("zero", "zéro", -0.360040),
        ("seven seven eight eight", "sept huit huit", -0.790750),
    ],
    5: [
        ("three one four", "trois un", -1.627985),
        ("one five nine two six", "un cinq neuf un", -1.126472),
        ("zero", "zéro", -0.360040),
        ("seven seven eight eight", "sept huit huit", -0.790751),
    ],
}


def leaf_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys |= leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def assert_translates_as_pinned(model_dir: Path) -> None:
    translator = Translator.from_dir(model_dir, device="cpu")
    for beam, cases in PINNED.items():
        results = translator.translate([line for line, _, _ in cases], SearchConfig(beam_size=beam))
        for (line, text, score), result in zip(cases, results, strict=True):
            assert (line, result.text) == (line, text), f"beam {beam}"
            assert result.nbest[0].score == pytest.approx(score, abs=1e-4), f"beam {beam}: {line}"


def format_1_copy(tmp_path: Path, drop: tuple[str, ...]) -> Path:
    """The fixture with its config.yaml as format 1 wrote it: no stamp, and without the ``drop`` keys."""
    copy = tmp_path / "format1"
    shutil.copytree(FIXTURE, copy)
    raw = yaml.safe_load((copy / "config.yaml").read_text(encoding="utf-8"))
    del raw["format"]
    for dotted in drop:
        section, key = dotted.split(".")
        del raw[section][key]
    (copy / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return copy


def test_written_config_carries_the_stamp_and_reads_back_equal(tmp_path, capsys):
    cfg = Config(model=ModelConfig(hidden_size=24, enc_hidden_size=7), run_dir="elsewhere")
    path = write_model_config(cfg, tmp_path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(raw)[0] == "format"
    assert raw["format"] == {"version": MODEL_DIR_FORMAT, "written_by": f"nmt {package_version()}"}
    assert read_model_config(tmp_path) == cfg
    assert capsys.readouterr().err == ""  # the current format is read without a word


def test_package_version_comes_from_the_metadata_else_from_the_source_tree(monkeypatch):
    assert package_version() == importlib.metadata.version("nmt")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert package_version() == nmt.__version__


@pytest.mark.slow
def test_training_writes_a_stamped_model_directory(tmp_path):
    from nmt.train.trainer import train

    cfg = digit_config(tmp_path, max_steps=2, validate_every=2, log_every=1)
    train(cfg)
    raw = yaml.safe_load((Path(cfg.run_dir) / "config.yaml").read_text(encoding="utf-8"))
    assert raw["format"]["version"] == MODEL_DIR_FORMAT
    assert read_model_config(cfg.run_dir) == cfg


def test_the_fixture_is_format_2_and_small():
    raw = yaml.safe_load((FIXTURE / "config.yaml").read_text(encoding="utf-8"))
    assert raw["format"] == {"version": 2, "written_by": "nmt 0.1.0"}
    files = sorted(p.relative_to(FIXTURE).as_posix() for p in FIXTURE.rglob("*") if p.is_file())
    assert files == ["checkpoints/best.pt", "config.yaml", "spm.model"]
    assert sum((FIXTURE / name).stat().st_size for name in files) < 400_000


FORMAT_2_UPGRADE = (
    "train.ema_decay=0.0, train.decay_start=0.0, data.bible.extra_src_versions=[], "
    "data.bible.extra_tgt_versions=[], train.subword_alpha=0.0, train.compiled_loops=false, "
    "train.compiled_loss=false"
)


def test_the_fixture_translates_exactly_as_when_it_was_made(capsys):
    assert_translates_as_pinned(FIXTURE)
    assert capsys.readouterr().err == (
        f"{FIXTURE / 'config.yaml'}: model directory format 2, read as format 6 ({FORMAT_2_UPGRADE})\n"
    )


def test_the_upgrade_gives_a_format_2_directory_every_key_of_today():
    raw = yaml.safe_load((FIXTURE / "config.yaml").read_text(encoding="utf-8"))
    upgrade_config(raw, FIXTURE / "config.yaml")
    schema = leaf_keys(OmegaConf.to_container(OmegaConf.structured(Config)))
    assert leaf_keys(raw) == schema, (
        "Config's keys differ from an upgraded format-2 model directory's: if an older directory, read with the "
        "new key's default, would not behave as it did, bump MODEL_DIR_FORMAT and add an upgrade step "
        "(nmt/model_dir.py) that sets the value older directories meant; then update this test"
    )
    assert raw["train"]["ema_decay"] == 0.0  # trained without a weight average, whatever today's default


def test_format_1_from_before_enc_hidden_size_is_upgraded_in_memory(tmp_path, capsys):
    copy = format_1_copy(tmp_path, drop=("model.enc_hidden_size", "tokenizer.trim_vocab"))
    cfg = read_model_config(copy)
    assert (cfg.model.enc_hidden_size, cfg.model.hidden_size, cfg.tokenizer.trim_vocab) == (16, 16, False)
    assert capsys.readouterr().err == (
        f"{copy / 'config.yaml'}: model directory format 1, read as format 6 "
        f"(model.enc_hidden_size=16 (= model.hidden_size), tokenizer.trim_vocab=false, {FORMAT_2_UPGRADE})\n"
    )
    assert_translates_as_pinned(copy)  # the same model: hidden_size units per encoder direction
    raw = yaml.safe_load((copy / "config.yaml").read_text(encoding="utf-8"))
    assert "enc_hidden_size" not in raw["model"]  # upgraded in memory only


def test_without_the_upgrade_a_format_1_directory_would_not_load(tmp_path):
    copy = format_1_copy(tmp_path, drop=())
    raw = yaml.safe_load((copy / "config.yaml").read_text(encoding="utf-8"))
    raw["model"]["enc_hidden_size"] = 0  # what reading it without the upgrade meant: hidden_size // 2
    write_model_config(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), raw)), copy)
    with pytest.raises(NmtError, match="checkpoint does not match config.yaml's model"):
        Translator.from_dir(copy, device="cpu")


def test_format_1_with_every_key_is_read_unchanged(tmp_path, capsys):
    copy = format_1_copy(tmp_path, drop=())
    assert read_model_config(copy) == read_model_config(FIXTURE)
    assert capsys.readouterr().err == (
        f"{copy / 'config.yaml'}: model directory format 1, read as format 6 ({FORMAT_2_UPGRADE})\n"
        f"{FIXTURE / 'config.yaml'}: model directory format 2, read as format 6 ({FORMAT_2_UPGRADE})\n"
    )


def test_a_newer_format_fails_naming_both_versions_and_the_writer(tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(FIXTURE, newer)
    text = (newer / "config.yaml").read_text(encoding="utf-8")
    text = text.replace("  version: 2\n  written_by: nmt 0.1.0\n", "  version: 7\n  written_by: nmt 9.1.0\n")
    (newer / "config.yaml").write_text(text, encoding="utf-8")
    expected = (
        f"{newer / 'config.yaml'}: model directory format 7 (written by nmt 9.1.0), but nmt "
        f"{package_version()} reads formats up to 6: upgrade nmt (pip install --upgrade nmt) to load it"
    )
    with pytest.raises(NmtError) as error:
        Translator.from_dir(newer, device="cpu")
    assert str(error.value) == expected


@pytest.mark.parametrize(
    "stamp",
    ["format: 2\n", "format:\n  version: two\n", "format:\n  version: 0\n", "format:\n  written_by: x\n"],
)
def test_a_malformed_stamp_is_an_error_naming_the_key(tmp_path, stamp):
    body = (FIXTURE / "config.yaml").read_text(encoding="utf-8").split("\n", 3)[3]
    (tmp_path / "config.yaml").write_text(stamp + body, encoding="utf-8")
    with pytest.raises(NmtError, match=r"config.yaml: `format` must be a mapping with an integer `version`"):
        read_model_config(tmp_path)


def test_missing_unreadable_and_invalid_configs_name_the_file(tmp_path):
    with pytest.raises(NmtError, match=r"config.yaml: not found; a model directory holds"):
        read_model_config(tmp_path)
    (tmp_path / "config.yaml").write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(NmtError, match=r"config.yaml: not valid YAML"):
        read_model_config(tmp_path)
    (tmp_path / "config.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(NmtError, match=r"config.yaml: expected a mapping of config sections"):
        read_model_config(tmp_path)
    (tmp_path / "config.yaml").write_text(
        "format:\n  version: 2\nmodel:\n  hidden_size: big\n", encoding="utf-8"
    )
    with pytest.raises(NmtError, match=r"(?s)config.yaml: invalid config: .*model.hidden_size"):
        read_model_config(tmp_path)
