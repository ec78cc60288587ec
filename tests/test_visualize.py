"""Attention heatmaps: files, pixel size, tick labels; subword merging."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from nmt.checkpoint import average_state_dicts, kept_checkpoints
from nmt.cli import CONF_DIR
from nmt.config import SearchConfig, TranslateConfig, VisualizeConfig, to_object
from nmt.errors import NmtError
from nmt.translate import Translator, translate_file
from nmt.visualize import (
    DPI,
    AttentionItem,
    attention_figure,
    attention_grid_figure,
    clean_label,
    merge_subwords,
    plot_attention,
    plot_attention_grid,
    visualize,
)

SRC = ["▁In", "▁the", "▁begin", "ning", "▁God", "▁created", ".", "</s>"]
TGT = ["▁Au", "▁commence", "ment", "▁Dieu", "▁créa", ".", "</s>"]


def attention(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    weights = np.random.default_rng(seed).random((rows, cols))
    return weights / weights.sum(axis=1, keepdims=True)


def tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def test_heatmap_files_pixels_and_labels(tmp_path: Path) -> None:
    weights = attention(len(TGT), len(SRC))
    fig = attention_figure(SRC, TGT, weights, title="Genèse 1:1")
    ax = fig.axes[0]
    assert tick_texts(ax.get_xticklabels()) == ["In", "the", "begin", "ning", "God", "created", ".", "</s>"]
    assert tick_texts(ax.get_yticklabels()) == ["Au", "commence", "ment", "Dieu", "créa", ".", "</s>"]
    assert ax.get_title() == "Genèse 1:1"
    assert all(label.get_rotation() == 90 for label in ax.get_xticklabels())
    np.testing.assert_array_equal(ax.images[0].get_array(), weights)

    paths = plot_attention(SRC, TGT, torch.tensor(weights), tmp_path / "plots" / "sent.1", title="Genèse 1:1")
    assert paths == [tmp_path / "plots" / "sent.1.png", tmp_path / "plots" / "sent.1.svg"]
    width, height = fig.get_size_inches()
    assert mpimg.imread(paths[0]).shape[:2] == (round(height * DPI), round(width * DPI))
    assert paths[1].read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_size_grows_with_tokens() -> None:
    small = attention_figure(["▁a", "▁b"], ["▁x"], attention(1, 2)).get_size_inches()
    large = attention_figure([f"▁w{i}" for i in range(30)], [f"▁y{i}" for i in range(20)], attention(20, 30))
    width, height = large.get_size_inches()
    assert width > small[0] and height > small[1]
    assert width * DPI / 30 >= 30 and height * DPI / 20 >= 30  # at least 30 pixels per cell


def test_grid(tmp_path: Path) -> None:
    items = [
        AttentionItem(SRC, TGT, attention(len(TGT), len(SRC)), "one"),
        AttentionItem(["▁Hello", "</s>"], ["▁Bonjour", "</s>"], attention(2, 2, seed=1), "two"),
        AttentionItem(["▁ça", "▁va", "</s>"], ["▁fine", "</s>"], attention(2, 3, seed=2), "three"),
    ]
    fig = attention_grid_figure(items, ncols=2)
    heatmaps = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in heatmaps] == ["one", "two", "three"]
    assert tick_texts(heatmaps[2].get_xticklabels()) == ["ça", "va", "</s>"]
    paths = plot_attention_grid(items, tmp_path / "grid", formats=["png"])
    assert paths == [tmp_path / "grid.png"] and paths[0].stat().st_size > 0


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NmtError, match=r"shape \(2, 3\) but there are 7 output and 8 source tokens"):
        attention_figure(SRC, TGT, np.zeros((2, 3)))
    with pytest.raises(NmtError, match="unsupported figure format"):
        plot_attention(["a"], ["b"], np.ones((1, 1)), tmp_path / "x", formats=["png", "bmpx"])
    assert not (tmp_path / "x.png").exists()


def test_clean_label() -> None:
    assert [clean_label(p) for p in ["▁élève", "ment", "▁", "</s>"]] == ["élève", "ment", "␣", "</s>"]


def test_merge_source_subwords_sums_columns() -> None:
    pieces = ["▁begin", "ning", "▁God", ".", "</s>"]
    weights = np.array([[0.1, 0.2, 0.3, 0.15, 0.25], [0.5, 0.0, 0.25, 0.2, 0.05]])
    words, merged = merge_subwords(pieces, weights, axis=1)
    assert words == ["beginning", "God.", "</s>"]
    np.testing.assert_allclose(merged, [[0.3, 0.45, 0.25], [0.5, 0.45, 0.05]])
    np.testing.assert_allclose(merged.sum(axis=1), 1.0)


def test_merge_target_subwords_averages_rows() -> None:
    pieces = ["▁commence", "ment", "▁", "«", "</s>"]
    weights = np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0], [0.5, 0.5], [0.3, 0.7]])
    words, merged = merge_subwords(pieces, weights, axis=0)
    assert words == ["commencement", "«", "</s>"]
    np.testing.assert_allclose(merged, [[0.4, 0.6], [0.75, 0.25], [0.3, 0.7]])
    np.testing.assert_allclose(merged.sum(axis=1), 1.0)


def test_merge_both_sides() -> None:
    src_words, weights = merge_subwords(SRC, attention(len(TGT), len(SRC)), axis=1)
    tgt_words, weights = merge_subwords(TGT, weights, axis=0)
    assert src_words == ["In", "the", "beginning", "God", "created.", "</s>"]
    assert tgt_words == ["Au", "commencement", "Dieu", "créa.", "</s>"]
    assert weights.shape == (5, 6)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="along axis 0"):
        merge_subwords(TGT[:3], weights, axis=0)


def test_a_model_is_loaded_with_the_weights_the_config_names(digit_model_dir, tmp_path, monkeypatch) -> None:
    """``visualize average=2``: the heatmaps come from the mean of the last two kept checkpoints."""
    overrides = [f"model_dir={digit_model_dir}", 'sentences=["one two"]', "average=2", "device=cpu"]
    overrides += [f"out_dir={tmp_path}", "formats=[png]"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = to_object(compose("visualize", overrides), VisualizeConfig)
    used: list[Translator] = []
    translate = Translator.translate
    monkeypatch.setattr(
        Translator, "translate", lambda self, *args: used.append(self) or translate(self, *args)
    )
    paths = visualize(cfg)
    assert [path.name for path in paths] == ["attention_01.png"]
    weights = used[0].model.model.state_dict()  # the trained weights behind the folded decoder
    mean = average_state_dicts(kept_checkpoints(digit_model_dir, 2, "average"), torch.device("cpu"))
    assert weights.keys() == mean.keys()
    for name, tensor in mean.items():
        torch.testing.assert_close(weights[name], tensor)
    best = Translator.from_dir(digit_model_dir, device="cpu").model.model.state_dict()
    assert any(not torch.equal(mean[name], best[name]) for name in mean)  # so the test tells them apart


def test_a_dump_written_in_chunks_plots_as_one_written_at_once(digit_model_dir, tmp_path) -> None:
    (tmp_path / "in.txt").write_text("one two\n\nthree four five\nsix\nseven eight\n", encoding="utf-8")
    for chunk_lines in (2, 1000):
        translate_file(
            TranslateConfig(
                model_dir=str(digit_model_dir),
                input=str(tmp_path / "in.txt"),
                output=str(tmp_path / f"out{chunk_lines}.txt"),
                dump_attention=str(tmp_path / f"att{chunk_lines}.pt"),
                search=SearchConfig(batch_tokens=1),  # one sentence per batch: the same weights either way
                chunk_lines=chunk_lines,
                progress=False,
                device="cpu",
            )
        )
    plots = {}
    for chunk_lines in (2, 1000):
        config = VisualizeConfig(
            attention_file=str(tmp_path / f"att{chunk_lines}.pt"),
            out_dir=str(tmp_path / f"plots{chunk_lines}"),
            formats=["png"],
            max_sentences=3,
        )
        plots[chunk_lines] = {path.name: path.read_bytes() for path in visualize(config)}
    # the empty line has nothing to draw; the fifth line is past max_sentences
    assert sorted(plots[2]) == [
        "attention_01.png",
        "attention_02.png",
        "attention_03.png",
        "attention_grid.png",
    ]
    assert plots[2] == plots[1000]
