"""Model directories are a versioned format: their ``config.yaml`` says which format it is and which nmt wrote it.

A model directory is what training leaves in ``run_dir`` (``config.yaml``, the sentencepiece model(s),
``checkpoints/best.pt``, ...). Its ``config.yaml`` is the resolved :class:`~nmt.config.Config` with one more
top-level mapping::

    format:
      version: 6
      written_by: nmt 0.1.0

Formats:

1. No ``format`` mapping. Directories written before ``model.enc_hidden_size`` and ``tokenizer.trim_vocab``
   existed lack both keys: their encoder has ``model.hidden_size`` units per direction and their tokenizer is
   not trimmed. Directories written after that and before the stamp have every key.
2. The ``format`` mapping.
3. ``train.ema_decay`` (the weight average that ``best`` holds), ``train.decay_start`` (of the budget schedules,
   new with them) and ``data.bible.extra_src_versions`` / ``extra_tgt_versions``. Format 2 directories were
   trained without any of them: they read as ``ema_decay=0``, ``decay_start=0`` and no extra versions, whatever
   today's defaults are, so that resuming one continues the run it was.
4. ``train.subword_alpha`` (subword regularisation). Format 3 directories trained on the one best segmentation:
   they read as ``subword_alpha=0``.
5. ``train.compiled_loops`` (the loops over time in C++). Format 4 directories trained on the Python loops, whose
   numbers the compiled ones match to rounding only (and, for the Luong step, with other dropout masks): they
   read as ``compiled_loops=false``, so that resuming one continues the run it was exactly.
6. ``train.compiled_loss`` (the loss in C++). Format 5 directories trained on the Python loss, which the compiled
   one matches to rounding: they read as ``compiled_loss=false``, for the same reason.

Reading an older format upgrades it in memory (one line on stderr says what changed); the files are left alone.
A format newer than :data:`MODEL_DIR_FORMAT` fails with the versions on both sides. A change to ``Config`` that
older directories cannot be read with as they are (a key whose default would change an old model's behaviour,
a renamed or reinterpreted key) bumps :data:`MODEL_DIR_FORMAT` and adds a step to :data:`UPGRADES`.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import nmt
from nmt.config import Config, to_object
from nmt.errors import NmtError

CONFIG_FILE = "config.yaml"
FORMAT_KEY = "format"
MODEL_DIR_FORMAT = 6
HUB_SCHEME = "hf://"  # a model_dir naming a hub repository (nmt.hub), not a local path


def is_hub_name(name: str | Path) -> bool:
    """Whether ``name`` is an ``hf://`` model name rather than a local path: here, not in :mod:`nmt.hub`, so
    that loading a local model directory does not import huggingface_hub (a third of a second)."""
    return isinstance(name, str) and name.startswith(HUB_SCHEME)


def package_version() -> str:
    """The installed nmt's version; the source tree's ``nmt.__version__`` when nmt runs uninstalled."""
    try:
        return importlib.metadata.version("nmt")
    except importlib.metadata.PackageNotFoundError:
        return nmt.__version__


def write_model_config(cfg: Config, run_dir: str | Path) -> Path:
    """Write ``run_dir/config.yaml``: the format stamp, then the resolved config; returns the path."""
    path = Path(run_dir) / CONFIG_FILE
    body = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    stamp = {"version": MODEL_DIR_FORMAT, "written_by": f"nmt {package_version()}"}
    OmegaConf.save(OmegaConf.create({FORMAT_KEY: stamp, **body}), path)  # type: ignore[arg-type]
    return path


def _upgrade_format_1(raw: dict[str, Any]) -> list[str]:
    """Fill in the keys that format 1 directories written before them lack, with the values they meant."""
    changes = []
    model = raw.setdefault("model", {})
    if "enc_hidden_size" not in model:
        # the encoder had hidden_size units per direction (256, the default then, when hidden_size is absent)
        model["enc_hidden_size"] = model.get("hidden_size", 256)
        changes.append(f"model.enc_hidden_size={model['enc_hidden_size']} (= model.hidden_size)")
    tokenizer = raw.setdefault("tokenizer", {})
    if "trim_vocab" not in tokenizer:
        tokenizer["trim_vocab"] = False  # trimming did not exist
        changes.append("tokenizer.trim_vocab=false")
    return changes


def _upgrade_format_2(raw: dict[str, Any]) -> list[str]:
    """Format 2 trained without a weight average and on one version per side."""
    changes = []
    train = raw.setdefault("train", {})
    for key in ("ema_decay", "decay_start"):  # no average; decay_start: no schedule read it yet
        if key not in train:
            train[key] = 0.0
            changes.append(f"train.{key}=0.0")
    bible = raw.setdefault("data", {}).setdefault("bible", {})
    for key in ("extra_src_versions", "extra_tgt_versions"):
        if key not in bible:
            bible[key] = []
            changes.append(f"data.bible.{key}=[]")
    return changes


def _set_missing_train_key(raw: dict[str, Any], key: str, value: float | bool) -> list[str]:
    """``train.<key> = value`` where the directory lacks the key (the override's text, for the stderr line)."""
    train = raw.setdefault("train", {})
    if key in train:
        return []
    train[key] = value
    return [f"train.{key}={str(value).lower()}"]


def _upgrade_format_3(raw: dict[str, Any]) -> list[str]:
    """Format 3 trained on the one best segmentation."""
    return _set_missing_train_key(raw, "subword_alpha", 0.0)


def _upgrade_format_4(raw: dict[str, Any]) -> list[str]:
    """Format 4 trained on the Python loops."""
    return _set_missing_train_key(raw, "compiled_loops", False)


def _upgrade_format_5(raw: dict[str, Any]) -> list[str]:
    """Format 5 trained on the Python loss."""
    return _set_missing_train_key(raw, "compiled_loss", False)


# UPGRADES[n] turns a format n config (a plain dict, edited in place) into format n + 1; returns what it set.
UPGRADES: dict[int, Callable[[dict[str, Any]], list[str]]] = {
    1: _upgrade_format_1,
    2: _upgrade_format_2,
    3: _upgrade_format_3,
    4: _upgrade_format_4,
    5: _upgrade_format_5,
}


def _format_stamp(raw: dict[str, Any], path: Path) -> tuple[int, str]:
    """The (version, written_by) stamp of ``raw``, removed from it; format 1 when there is none."""
    stamp = raw.pop(FORMAT_KEY, None)
    if stamp is None:
        return 1, "an nmt without format stamps"
    version = stamp.get("version") if isinstance(stamp, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise NmtError(
            f"{path}: `{FORMAT_KEY}` must be a mapping with an integer `version` >= 1, got {stamp!r}; "
            "this config.yaml was not written by nmt training"
        )
    return version, str(stamp.get("written_by", "an unknown nmt"))


def upgrade_config(raw: dict[str, Any], path: Path) -> tuple[int, list[str]]:
    """Bring ``raw`` (a config.yaml's contents, edited in place) to :data:`MODEL_DIR_FORMAT`; returns the format it
    had and the changes made. A newer format than this nmt reads is an NmtError."""
    version, written_by = _format_stamp(raw, path)
    if version > MODEL_DIR_FORMAT:
        raise NmtError(
            f"{path}: model directory format {version} (written by {written_by}), but nmt {package_version()} "
            f"reads formats up to {MODEL_DIR_FORMAT}: upgrade nmt (pip install --upgrade nmt) to load it"
        )
    changes: list[str] = []
    for step in range(version, MODEL_DIR_FORMAT):
        changes += UPGRADES[step](raw)
    return version, changes


def read_model_config(model_dir: str | Path) -> Config:
    """The :class:`Config` in ``model_dir/config.yaml``, upgraded in memory from an older format."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise NmtError(f"{path}: not found; a model directory holds the config.yaml its training wrote")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml and omegaconf raise several types; the user needs the file and the reason
        raise NmtError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, DictConfig):
        raise NmtError(f"{path}: expected a mapping of config sections, got a list")
    raw: dict[str, Any] = OmegaConf.to_container(loaded)  # type: ignore[assignment]
    version, changes = upgrade_config(raw, path)
    if version < MODEL_DIR_FORMAT:
        done = ", ".join(changes) if changes else "no key needed a change"
        print(
            f"{path}: model directory format {version}, read as format {MODEL_DIR_FORMAT} ({done})",
            file=sys.stderr,
        )
    try:
        return to_object(raw, Config)
    except Exception as exc:  # omegaconf raises several types; the user needs the file and the reason
        raise NmtError(f"{path}: invalid config: {exc}") from exc
