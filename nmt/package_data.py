"""Data files that ship inside installed packages: this one's Hydra configs (``CONF_DIR``), and those of other
packages (the Bible, the recipes' data sets), found without importing those packages — importing them would
pull in their own heavy dependencies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nmt.errors import NmtError

CONF_DIR = Path(__file__).resolve().parent / "conf"  # the YAML presets; a clone's top-level conf/ links here


def package_file(package: str, relative: str, what: str, instead: str) -> Path:
    """``<site-packages>/<package>/<relative>``; NmtError naming ``what`` and the alternative when the package is
    not installed (the file itself is checked by the caller, which knows how to say what is wrong with it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NmtError(f"{what} ships inside the `{package}` package, which is not installed: {instead}")
    return Path(next(iter(spec.submodule_search_locations))) / relative
