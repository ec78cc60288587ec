import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from corpus import write_digit_corpus
from huggingface_hub import scan_cache_dir
from hydra import compose, initialize_config_dir

import nmt.hub as hub
from nmt.config import EvaluateConfig, PushConfig, SearchConfig, TranslationSearchConfig, to_object
from nmt.errors import NmtError
from nmt.evaluate import evaluate_model
from nmt.hub import model_card, parse_hub_name, push, push_model_dir, resolve_model_dir, upload_files
from nmt.shortlist import lexicon_from_pairs, save_lexicon
from nmt.translate import Translator

FIXTURE = Path(__file__).parent / "fixtures" / "model_dir_v2"
CONF = Path(__file__).resolve().parents[1] / "nmt" / "conf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROBES = ["three one four", "one five nine two six", "zero"]


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An empty Hugging Face home for this test, offline; returns its hub cache."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def cache_snapshot(cache: Path, repo_id: str, source: Path, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``source``'s files in ``cache`` as huggingface_hub lays out a download: content-addressed blobs,
    ``snapshots/<commit>/`` of relative symlinks to them, and ``refs/<ref>`` files naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    for ref in refs:
        (repo / "refs" / ref).write_text(COMMIT)
    return snapshot


def test_local_paths_come_back_unchanged():
    assert resolve_model_dir("runs/bible-en-fr") == Path("runs/bible-en-fr")
    assert resolve_model_dir(FIXTURE) == FIXTURE


def test_hub_names_parse_and_bad_ones_say_the_form():
    assert parse_hub_name("hf://owner/name") == ("owner/name", None)
    assert parse_hub_name("hf://owner/name@v1.0") == ("owner/name", "v1.0")
    for bad in ("hf://name", "hf://owner/name/extra", "hf:///name", "hf://owner/", "hf://owner/name@"):
        with pytest.raises(NmtError, match=r"expected hf://OWNER/NAME or hf://OWNER/NAME@REVISION"):
            parse_hub_name(bad)


def test_a_cached_snapshot_resolves_offline_by_branch_tag_or_commit(hf_home):
    snapshot = cache_snapshot(hf_home, "owner/name", FIXTURE, refs=("main", "v1"))
    (repo,) = scan_cache_dir(hf_home).repos  # the library itself reads the layout as one cached repo
    assert (repo.repo_id, repo.nb_files) == ("owner/name", 3)
    for name in ("hf://owner/name", "hf://owner/name@v1", f"hf://owner/name@{COMMIT}"):
        assert resolve_model_dir(name) == snapshot.resolve()


def test_a_hub_model_translates_like_the_local_directory(hf_home):
    cache_snapshot(hf_home, "owner/name", FIXTURE)
    local = Translator.from_dir(FIXTURE, device="cpu")
    remote = Translator.from_dir("hf://owner/name", device="cpu")
    for beam in (1, 5):
        expected = local.translate(PROBES, SearchConfig(beam_size=beam))
        got = remote.translate(PROBES, SearchConfig(beam_size=beam))
        assert [(t.text, t.nbest[0].score) for t in got] == [(t.text, t.nbest[0].score) for t in expected]


def test_a_hub_model_brings_its_lexicon_for_the_shortlist(hf_home, tmp_path):
    local = tmp_path / "with_lexicon"
    shutil.copytree(FIXTURE, local)
    tokenizer = Translator.from_dir(FIXTURE, device="cpu").tokenizer
    pairs = [[4, 5, 6], [7, 8], [9, 10, 11]]
    vocab = (tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    save_lexicon(lexicon_from_pairs(pairs, pairs, vocab, per_source=2), local)
    assert "lexicon.npz" in upload_files(local)
    cache_snapshot(hf_home, "owner/name", local)
    remote = Translator.from_dir("hf://owner/name", device="cpu")
    want = Translator.from_dir(local, device="cpu").lexicon
    assert remote.lexicon is not None and want is not None
    assert (remote.lexicon.table == want.table).all() and (remote.lexicon.frequent == want.frequent).all()
    search = TranslationSearchConfig(
        beam_size=5, shortlist=True, shortlist_frequent=3, shortlist_per_source=2
    )
    assert remote.shortlist(search) is not None
    assert [t.text for t in remote.translate(PROBES, search)] == [
        t.text for t in Translator.from_dir(local, device="cpu").translate(PROBES, search)
    ]


def test_evaluating_a_hub_model_writes_to_the_working_directory(hf_home, tmp_path, monkeypatch):
    snapshot = cache_snapshot(hf_home, "owner/name", FIXTURE)
    monkeypatch.chdir(tmp_path)
    write_digit_corpus(Path("corpus"))  # the fixture's data paths are relative: corpus/{train,dev,test}
    cfg = EvaluateConfig(model_dir="hf://owner/name", device="cpu", search=SearchConfig(beam_size=1))
    results = evaluate_model(cfg)
    assert (
        json.loads((tmp_path / "eval" / "test.json").read_text(encoding="utf-8"))["bleu"] == results["bleu"]
    )
    assert not (snapshot / "eval").exists()


def test_an_uncached_model_offline_fails_fast_naming_the_local_alternative(hf_home):
    started = time.monotonic()
    with pytest.raises(NmtError) as error:
        Translator.from_dir("hf://owner/missing")
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert message.startswith(
        "model_dir=hf://owner/missing: HF_HUB_OFFLINE=1 is set and owner/missing@main is"
    )
    assert "use model_dir=PATH with a local model directory" in message


def test_an_unreachable_hub_fails_fast_unless_the_model_is_cached(hf_home, unreachable_hub):
    started = time.monotonic()
    with pytest.raises(NmtError) as error:
        resolve_model_dir("hf://owner/missing@v2")
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "the Hugging Face hub (http://127.0.0.1:9, via 127.0.0.1:9) cannot be reached" in message
    assert "owner/missing@v2 is not in" in message and "use model_dir=PATH" in message
    snapshot = cache_snapshot(hf_home, "owner/name", FIXTURE)
    started = time.monotonic()
    assert resolve_model_dir("hf://owner/name") == snapshot.resolve()
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------------------------------------- push
def full_run_dir(root: Path) -> Path:
    """The fixture plus everything else a training run, an evaluation and a visualization leave behind."""
    run = root / "run"
    shutil.copytree(FIXTURE, run)
    for name in (
        "checkpoints/last.pt",
        "checkpoints/last.prev.pt",
        "checkpoints/step_00000500.pt",
        "checkpoints/step_00001000.pt",
        "tensorboard/events.out.tfevents.1",
        ".hydra/config.yaml",
        "eval/test.src",
        "eval/test.hyp",
        "eval/test.ref",
        "attention/attention_01.png",
        "attention/attention_01.svg",
        "attention/attention_grid.png",
        "curves.png",
        "metrics.csv",
        "tokenizer.json",
        "train.log",
    ):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"x")
    metrics = {
        "stop_reason": "reached train.max_steps=1000",
        "steps": 1000,
        "epochs": 45,
        "train_minutes": 1.04,
        "parameters": 9876,
        "best_dev_bleu": 21.6,
        "device": "cuda:0",
        "processes": 2,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    summary = {
        "tokenizer": {"src_vocab_size": 30, "tgt_vocab_size": 30},
        "splits": {"train": {"pairs": 240}, "dev": {"pairs": 16}, "test": {"pairs": 16}},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    evaluation = {
        "split": "test",
        "beam_size": 5,
        "n_sentences": 16,
        "bleu": 31.2345,
        "chrf": 70.5,
        "signatures": {
            "bleu": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1",
            "chrf": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.5.1",
        },
    }
    (run / "eval" / "test.json").write_text(json.dumps(evaluation))
    return run


UPLOADED = [
    "attention/attention_01.png",
    "attention/attention_grid.png",
    "checkpoints/best.pt",
    "config.yaml",
    "curves.png",
    "eval/test.json",
    "metrics.csv",
    "metrics.json",
    "spm.model",
    "summary.json",
    "tokenizer.json",
]


def test_a_push_uploads_what_translation_needs_and_what_describes_the_model(tmp_path):
    assert upload_files(full_run_dir(tmp_path)) == UPLOADED
    assert upload_files(FIXTURE) == ["checkpoints/best.pt", "config.yaml", "spm.model"]


def test_a_directory_without_validated_weights_or_tokenizer_is_not_pushed(tmp_path):
    run = full_run_dir(tmp_path)
    (run / "checkpoints" / "best.pt").unlink()
    with pytest.raises(
        NmtError, match=r"run: no checkpoints/best.pt, so it is not a finished model directory"
    ):
        upload_files(run)
    shutil.copy2(FIXTURE / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    (run / "spm.model").unlink()
    with pytest.raises(
        NmtError, match=r"run: no sentencepiece model \(spm.model, spm.src.model, spm.tgt.model\)"
    ):
        upload_files(run)
    with pytest.raises(NmtError, match="not a directory"):
        upload_files(tmp_path / "missing")


def test_the_model_card_says_pair_data_scores_with_signatures_hardware_and_use(tmp_path):
    card = model_card(full_run_dir(tmp_path), "owner/digits")
    lines = card.splitlines()
    assert lines[:12] == [
        "---",
        "language:",
        "- en",
        "- fr",
        "library_name: nmt",
        "pipeline_tag: translation",
        "tags:",
        "- translation",
        "- rnn",
        "- attention",
        "---",
        "",
    ]
    for line in [
        "# owner/digits: en → fr translation",
        "- Corpus: local parallel text (moses): train `corpus/train`, dev `corpus/dev`, test `corpus/test`",
        "- Sentence pairs after cleaning: train 240, dev 16, test 16",
        "- Tokenizer: sentencepiece unigram, vocab_size 30 (joint); 30 source and 30 target ids",
        "- Model: bidirectional GRU encoder (1 layer(s), 16 units per direction), GRU decoder (1 layer(s), "
        "16 units), bahdanau attention, bahdanau decoder step, 16-dimensional embeddings",
        "| evaluation | split | sentences | beam | BLEU | chrF |",
        "| eval/test.json | test | 16 | 5 | 31.23 | 70.50 |",
        "eval/test.json bleu: nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1",
        "eval/test.json chrf: nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.5.1",
        "- Time: 1.0 minutes, 1,000 updates (45 epochs); stopped: reached train.max_steps=1000",
        "- Hardware: cuda:0, 2 processes",
        "- Parameters: 9,876",
        "![attention weights](attention/attention_grid.png)",
        'echo "..." | nmt translate model_dir=hf://owner/digits',
        'translator = Translator.from_dir("hf://owner/digits")',
    ]:
        assert line in lines, line
    assert "Best dev BLEU" not in card


def test_without_an_evaluation_the_card_gives_the_best_dev_bleu(tmp_path):
    run = full_run_dir(tmp_path)
    shutil.rmtree(run / "eval")
    shutil.rmtree(run / "attention")
    card = model_card(run, "owner/digits")
    assert (
        "Best dev BLEU during training: 21.60 (validation decoding with beam 1; no sacrebleu signature "
        "recorded). `nmt evaluate model_dir=...` scores the test split with signatures."
    ) in card.splitlines()
    assert "## Attention" not in card and "signatures:" not in card
    assert model_card(FIXTURE, "o/n").count("No metrics.json: the training run did not finish.") == 1


class RecordingHub:
    """Stands in for the hub's API (no hub is reachable from the tests): records what a push sends."""

    calls: list = []
    uploaded: dict[str, bytes] = {}

    def __init__(self, **kwargs):
        RecordingHub.calls = [("init", kwargs)]

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, folder_path, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        root = Path(folder_path)
        RecordingHub.uploaded = {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }

        class Commit:
            commit_url = "https://hub.example/owner/digits/commit/abc"

        return Commit()


def test_a_push_creates_the_repo_and_uploads_the_files_with_the_card(tmp_path, monkeypatch, capsys):
    run = full_run_dir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    monkeypatch.setattr(hub, "HfApi", RecordingHub)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    cfg = PushConfig(model_dir=str(run), repo_id="owner/digits", private=True, revision="v1")
    assert push(cfg) == "https://hub.example/owner/digits/commit/abc"
    assert capsys.readouterr().out == (
        f"pushed {run} to https://hub.example/owner/digits: https://hub.example/owner/digits/commit/abc\n"
    )
    init, *calls = RecordingHub.calls
    assert init[1]["endpoint"] == "https://hub.example"
    assert calls == [
        ("create_repo", "owner/digits", {"private": True, "exist_ok": True}),
        ("create_branch", "owner/digits", {"branch": "v1", "exist_ok": True}),
        (
            "upload_folder",
            {"repo_id": "owner/digits", "revision": "v1", "commit_message": "Upload an nmt model directory"},
        ),
    ]
    assert sorted(RecordingHub.uploaded) == sorted([*UPLOADED, "README.md"])
    assert RecordingHub.uploaded["README.md"].decode() == model_card(run, "owner/digits")
    assert RecordingHub.uploaded["checkpoints/best.pt"] == (run / "checkpoints" / "best.pt").read_bytes()


def test_a_push_offline_or_to_an_unreachable_hub_fails_fast(tmp_path, monkeypatch, unreachable_hub):
    run = full_run_dir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        NmtError, match=r"nmt push owner/digits: HF_HUB_OFFLINE=1 is set; pushing needs the hub"
    ):
        push_model_dir(run, "owner/digits")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    started = time.monotonic()
    with pytest.raises(NmtError) as error:
        push_model_dir(run, "owner/digits")
    assert time.monotonic() - started < 5
    assert str(error.value) == (
        "nmt push owner/digits: the Hugging Face hub (http://127.0.0.1:9, via 127.0.0.1:9) cannot be reached; "
        f"check the network (or HF_ENDPOINT, HTTPS_PROXY); the model stays usable locally as model_dir={run}"
    )


def test_push_yaml_composes_into_a_push_config():
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("push", overrides=["model_dir=runs/x", "repo_id=owner/digits", "private=true"])
    assert to_object(cfg, PushConfig) == PushConfig(model_dir="runs/x", repo_id="owner/digits", private=True)
