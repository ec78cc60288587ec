"""The scale benchmark at a tiny size (every stage measured, the JSON written, a second run on the caches), and
training's refusal of a corpus without a dev set before any work."""

import json

import pytest
from corpus import digit_config, write_digit_corpus
from hydra import compose, initialize_config_dir

from nmt.cli import CONF_DIR
from nmt.config import ScaleConfig, to_object
from nmt.data.stages import (
    CLEAN,
    LOAD_CORPUS,
    LOAD_TOKENIZED,
    LOAD_TOKENIZER,
    MAX_LEN,
    READ,
    SAMPLE,
    SAVE_CORPUS,
    SAVE_TOKENIZED,
    SUMMARY,
    TOKENIZE,
    TRAIN_TOKENIZER,
)
from nmt.errors import NmtError
from nmt.tools.scale import (
    GENERATE,
    LENGTH_ARRAYS,
    SAMPLER_EPOCH,
    TRAIN_FIRST_UPDATE,
    TRAIN_INIT,
    scale_bench,
)
from nmt.train.trainer import Trainer

TINY = [
    "pairs=2000",
    "dev_pairs=20",
    "config.data.num_proc=1",
    "config.tokenizer.vocab_size=300",
    "config.model.emb_size=16",
    "config.model.hidden_size=16",
    "config.model.attention_size=16",
    "config.train.max_tokens=400",
    "config.train.val_max_sentences=2",
    "config.threads=1",
]


def scale_config(work_dir, *overrides: str) -> ScaleConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        raw = compose("scale", overrides=[f"work_dir={work_dir}", *overrides])
    return to_object(raw, ScaleConfig)


@pytest.mark.slow
def test_every_stage_is_measured_and_a_second_run_reuses_the_caches(tmp_path, capsys):
    work = tmp_path / "scale"
    first = scale_bench(scale_config(work, *TINY, "train_updates=1"))
    stages = [GENERATE, LOAD_CORPUS, READ, CLEAN, SAVE_CORPUS, SAMPLE, TRAIN_TOKENIZER, LOAD_TOKENIZED]
    stages += [TOKENIZE, MAX_LEN, SAVE_TOKENIZED, SUMMARY, LENGTH_ARRAYS, SAMPLER_EPOCH]
    assert [s["name"] for s in first["stages"]] == stages
    for stage in first["stages"]:
        assert stage["seconds"] > 0 and 0 < stage["peak_heap_mib"] <= stage["peak_rss_mib"], stage
    assert first["caches"] == {"corpus": False, "tokenizer": False, "tokenized": False}
    assert first["corpus"]["generated"] and not first["corpus"]["reused"]
    assert first["corpus"]["train"] == str(work / "corpus" / "train-2000")
    assert first["pairs"]["dev"] == 20 and not first["pairs"]["test"]
    assert 1900 < first["pairs"]["train"] <= 2000  # a few verses dropped by cleaning (ratio)
    assert first["sampler_batches"] > 0
    assert first["peak_rss_mib"] == max(s["peak_rss_mib"] for s in first["stages"])
    # The training process ran on the caches the preparation had just filled.
    training = first["training"]
    assert training["caches"] == {"corpus": True, "tokenizer": True, "tokenized": True}
    assert [s["name"] for s in training["stages"]] == [TRAIN_INIT, TRAIN_FIRST_UPDATE]
    assert training["updates"] == 1
    assert 0 < training["seconds_to_imports"] < training["seconds_to_first_batch"]
    assert training["seconds_to_first_batch"] < training["seconds_to_first_update"]
    assert first.pop("output") == str(work / "scale.json")
    assert json.loads((work / "scale.json").read_text()) == first  # the JSON holds what was measured
    printed = capsys.readouterr().out
    assert "caches reused: corpus no, tokenizer no, tokenized no" in printed and "first update" in printed

    second = scale_bench(scale_config(work, *TINY))
    assert [s["name"] for s in second["stages"]] == [
        LOAD_CORPUS,
        LOAD_TOKENIZER,
        LOAD_TOKENIZED,
        SUMMARY,
        LENGTH_ARRAYS,
        SAMPLER_EPOCH,
    ]
    assert second["caches"] == {"corpus": True, "tokenizer": True, "tokenized": True}
    assert second["corpus"]["reused"] and second["training"] is None
    assert (second["pairs"], second["sampler_batches"]) == (first["pairs"], first["sampler_batches"])
    assert "caches reused: corpus yes, tokenizer yes, tokenized yes" in capsys.readouterr().out


def test_a_text_corpus_without_dev_is_refused_before_any_work(tmp_path):
    cfg = digit_config(tmp_path)
    cfg.data.text.dev = None
    with pytest.raises(NmtError, match="data.text.dev is not set"):
        Trainer(cfg)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
    # The benchmark checks too, before preparing a corpus it could not train on.
    corpus = write_digit_corpus(tmp_path / "digits")
    bench = scale_config(
        tmp_path / "scale", *TINY, "train_updates=1", f"config.data.text.train={corpus}/train"
    )
    with pytest.raises(NmtError, match="data.text.dev"):
        scale_bench(bench)
    assert not (tmp_path / "scale" / "cache").exists()


def test_a_dev_set_that_cleaning_empties_is_refused_naming_the_setting(tmp_path):
    cfg = digit_config(tmp_path)
    for lang in ("en", "fr"):
        (tmp_path / "corpus" / f"dev.{lang}").write_text("\n \n\n", encoding="utf-8")  # all dropped as empty
    with pytest.raises(NmtError, match="dev split of data.source=text is empty.*check data.text.dev"):
        Trainer(cfg)
