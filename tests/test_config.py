import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from nmt.cli import CONF_DIR
from nmt.config import (
    Config,
    ConfigValueError,
    DecoderStep,
    RnnType,
    SearchConfig,
    ServeConfig,
    TrainConfig,
    TranslateConfig,
    load_config,
    save_config,
    to_object,
)
from nmt.errors import NmtError
from nmt.recipes.config import SCHEMAS, recipe_config

REPO = Path(__file__).resolve().parents[1]


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def test_default_composition_equals_dataclass_defaults():
    cfg = to_object(compose_config("config", []), Config)
    assert cfg == Config()


def test_smoke_preset_shrinks_model_and_steps():
    cfg = to_object(compose_config("config", ["train=smoke"]), Config)
    assert cfg.model.hidden_size == 32 and cfg.train.max_steps == 30 and cfg.tokenizer.vocab_size == 500
    assert cfg.data == Config().data  # the preset does not touch the corpus


def test_full_preset_is_the_larger_bf16_model():
    cfg = to_object(compose_config("config", ["train=full"]), Config)
    assert (cfg.model.hidden_size, cfg.model.enc_layers, cfg.tokenizer.vocab_size) == (512, 2, 16000)
    assert cfg.train.precision == "bf16" and cfg.train.max_minutes == 60


@pytest.mark.parametrize("variant", sorted(p.stem for p in (CONF_DIR / "variant").glob("*.yaml")))
def test_every_study_variant_composes_and_changes_one_thing(variant):
    """A typo in a variant file would only show an hour into a study; here it fails at once."""
    cfg = to_object(compose_config("config", [f"+variant={variant}"]), Config)
    changed = {
        f"{section}.{key}"
        for section in ("tokenizer", "model", "train")
        for key, value in vars(getattr(cfg, section)).items()
        if value != vars(getattr(Config(), section))[key]
    }
    assert (variant == "base") == (not changed)
    assert len({name.split(".")[0] for name in changed}) <= 1  # one section: one idea per variant


def test_typo_in_override_fails_clearly():
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("config", ["train.lrr=0.1"])
    assert "lrr" in str(info.value.__cause__) or "lrr" in str(info.value)


def test_wrong_type_and_bad_enum_fail():
    with pytest.raises(ConfigCompositionException):
        compose_config("config", ["train.lr=fast"])
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("config", ["model.rnn_type=transformer"])
    assert "gru" in str(info.value.__cause__)  # the message lists the valid choices


def test_enums_compare_to_plain_strings():
    cfg = to_object(compose_config("config", ["model.rnn_type=lstm", "model.decoder_step=luong"]), Config)
    assert cfg.model.rnn_type == RnnType.lstm == "lstm"
    assert cfg.model.decoder_step == DecoderStep.luong


def test_save_load_round_trip(tmp_path):
    cfg = Config(run_dir="x", seed=7)
    cfg.model.rnn_type = RnnType.lstm
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(NmtError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model:\n  hidden_sizee: 3\n")
    with pytest.raises(NmtError, match="bad.yaml: invalid config"):
        load_config(tmp_path / "bad.yaml")


def test_translate_config_requires_model_dir():
    cfg = compose_config("translate", [])
    with pytest.raises(MissingMandatoryValue):
        to_object(cfg, TranslateConfig)


# ------------------------------------------------------------------------------------------- value ranges
BAD_VALUES = [
    (
        "config",
        ["train.validate_every=0"],
        "train.validate_every=0: must be >= 1 (updates between validations)",
    ),
    ("config", ["train.log_every=0"], "train.log_every=0: must be >= 1 (updates between log lines)"),
    ("config", ["train.max_tokens=-5"], "train.max_tokens=-5: must be >= 1 (tokens per batch)"),
    ("config", ["train.accumulate=0"], "train.accumulate=0: must be >= 1 (batches per update)"),
    ("config", ["train.max_minutes=-1"], "train.max_minutes=-1.0: must be >= 0 (0: no time limit)"),
    ("config", ["model.dropout=1.5"], "model.dropout=1.5: must be in [0, 1) (a probability)"),
    (
        "config",
        ["train.adam_betas=[0.9,1.5]"],
        "train.adam_betas=[0.9, 1.5]: must be two numbers in [0, 1) (Adam's beta1, beta2)",
    ),
    ("config", ["search.beam_size=0"], "search.beam_size=0: must be >= 1"),
    (
        "config",
        ["model.tie_embeddings=true", "model.emb_size=128"],
        "model.tie_embeddings=true: needs emb_size == hidden_size (the output layer has hidden_size inputs), "
        "got 128 and 256: make them equal or set tie_embeddings=false",
    ),
    ("translate", ["model_dir=m", "search.nbest=6"], "search.nbest=6: must be between 1 and beam_size=5"),
    (
        "evaluate",
        ["average=2", "ensemble_last=3"],
        "ensemble_last=3: cannot go with average=2 (one merges the checkpoints into one model, the other "
        "keeps them apart): set one of them to 0",
    ),
    ("serve", ["model_dir=m", "port=70000"], "port=70000: must be in [1, 65535] (a TCP port)"),
    ("serve", ["model_dir=m", "search.beam_size=20"], "search.beam_size=20: must be <= max_beam_size=16"),
    ("visualize", ["formats=[]"], "formats=[]: must name at least one (png, svg, pdf, ...)"),
    (
        "benchmark",
        ["config.train.validate_every=0"],
        "config.train.validate_every=0: must be >= 1 (updates between validations)",
    ),
]


def _schema(cfg) -> type:
    return OmegaConf.get_type(cfg)  # a primary config's defaults list starts with its base_* schema


@pytest.mark.parametrize(("name", "overrides", "message"), BAD_VALUES)
def test_a_value_out_of_range_is_named_with_its_full_key(name, overrides, message):
    cfg = compose_config(name, overrides)
    with pytest.raises(ConfigValueError) as info:
        to_object(cfg, _schema(cfg))
    assert str(info.value) == message


def test_every_bad_value_is_reported_in_one_message():
    cfg = compose_config("config", ["train.validate_every=0", "model.dropout=-0.1", "search.nbest=0"])
    with pytest.raises(ConfigValueError) as info:
        to_object(cfg, Config)
    assert [p.key for p in info.value.problems] == ["model.dropout", "train.validate_every", "search.nbest"]
    assert str(info.value).count("; ") == 2
    assert isinstance(info.value, NmtError)


def test_recipe_values_are_checked_with_their_keys():
    with pytest.raises(ConfigValueError) as info:
        recipe_config("sentiment", ["train.epochs=0", "data.dev_fraction=0.5", "data.test_fraction=0.6"])
    assert str(info.value) == (
        "data.test_fraction=0.6: with dev_fraction=0.5 leaves no training reviews: the two must sum to < 1; "
        "train.epochs=0: must be >= 1"
    )
    with pytest.raises(ConfigValueError, match=r"^train\.tbptt_steps=0: must be >= 1 \(steps per chunk\)$"):
        recipe_config("stock", ["train.tbptt_steps=0"])


def test_constructing_a_dataclass_checks_it_too():
    with pytest.raises(ConfigValueError, match=r"^nbest=3: must be between 1 and beam_size=2$"):
        SearchConfig(beam_size=2, nbest=3)
    with pytest.raises(ConfigValueError, match=r"^validate_every=0: must be >= 1"):
        TrainConfig(validate_every=0)
    with pytest.raises(ConfigValueError, match=r"^max_queue_lines=8: must be >= max_lines=64"):
        ServeConfig(model_dir="m", max_queue_lines=8)


def test_one_error_per_bad_value():
    with pytest.raises(ConfigValueError) as info:
        SearchConfig(beam_size=0)  # nbest=1 is fine on its own: only beam_size is named
    assert [p.key for p in info.value.problems] == ["beam_size"]


def test_load_config_names_the_file_and_the_key(tmp_path):
    (tmp_path / "config.yaml").write_text("train:\n  validate_every: 0\n")
    with pytest.raises(
        NmtError, match=r"config\.yaml: invalid config: train\.validate_every=0: must be >= 1"
    ):
        load_config(tmp_path / "config.yaml")


@pytest.mark.slow
def test_the_train_script_refuses_a_bad_value_before_making_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "scripts/train.py",
        "train=smoke",
        "train.validate_every=0",
        f"run_dir={run_dir}",
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: invalid config: train.validate_every=0: must be >= 1 (updates between validations)"
    )
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()
    assert time.monotonic() - started < 60  # no data preparation or training happened


# ------------------------------------------------------------------------------------------------ presets
PRIMARY = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
GROUP_PRESETS = sorted(
    str(p.relative_to(CONF_DIR).with_suffix(""))
    for group in ("data", "model", "train", "variant")
    for p in (CONF_DIR / group).glob("*.yaml")
)
RECIPE_PRESETS = sorted(
    (name, p.stem) for name in SCHEMAS for p in (CONF_DIR / "recipe" / name / "train").glob("*.yaml")
)


@pytest.mark.parametrize("name", PRIMARY)
def test_every_primary_config_composes_and_passes_its_checks(name):
    cfg = compose_config(name, [])
    for key in OmegaConf.missing_keys(cfg):  # mandatory values such as model_dir
        OmegaConf.update(cfg, key, "x")
    typed = to_object(cfg, _schema(cfg))
    assert type(typed) is _schema(cfg)


@pytest.mark.parametrize("preset", GROUP_PRESETS)
def test_every_group_preset_composes_and_passes_its_checks(preset):
    group, option = preset.split("/")
    override = f"+{group}={option}" if group == "variant" else f"{group}={option}"
    assert isinstance(to_object(compose_config("config", [override]), Config), Config)


def test_the_study_composes_and_passes_its_checks():
    cfg = to_object(compose_config("config", ["+study=budget", "run_dir=x"]), Config)
    assert cfg.train.max_minutes == 7 and cfg.threads == 1


@pytest.mark.parametrize(("recipe", "preset"), RECIPE_PRESETS)
def test_every_recipe_preset_composes_and_passes_its_checks(recipe, preset):
    assert isinstance(recipe_config(recipe, [f"train={preset}"]), SCHEMAS[recipe])


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


PRESET_FILES = [
    *((CONF_DIR / f"{preset}.yaml", Config, preset.split("/")[0]) for preset in GROUP_PRESETS),
    *((CONF_DIR / "recipe" / r / "train" / f"{p}.yaml", SCHEMAS[r], "train") for r, p in RECIPE_PRESETS),
]


@pytest.mark.parametrize(("path", "schema", "package"), PRESET_FILES, ids=lambda v: getattr(v, "stem", None))
def test_presets_state_only_what_they_change(path, schema, package):
    """Every default lives in the dataclasses: a preset line equal to the default would state it twice."""
    text = path.read_text()
    prefix = "" if "@package _global_" in text else f"{package}."
    defaults = OmegaConf.structured(schema)
    restated = [
        key
        for key, value in _leaves(yaml.safe_load(text) or {})
        if OmegaConf.select(defaults, prefix + key) == value
    ]
    assert restated == []
