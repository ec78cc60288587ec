import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import MissingMandatoryValue

from nmt.cli import CONF_DIR
from nmt.config import (
    Config,
    DecoderStep,
    RnnType,
    TranslateConfig,
    load_config,
    save_config,
    to_object,
)
from nmt.errors import NmtError


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
