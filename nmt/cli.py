"""The glue every script shares: compose the Hydra config into its dataclass and report NmtError cleanly."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from nmt.config import to_object
from nmt.errors import NmtError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
T = TypeVar("T")


def hydra_main(
    config_name: str, schema: type[T], config_dir: Path = CONF_DIR
) -> Callable[[Callable[[T], Any]], Callable[[], None]]:
    """Decorate ``fn(cfg: schema)`` into a Hydra entry point reading ``config_dir/config_name.yaml``.

    A user error (:class:`NmtError`) is printed as one line on stderr with exit status 2, without a traceback,
    unless ``NMT_DEBUG=1``. Under ``torchrun`` (RANK set), ranks other than 0 write no Hydra log or config files.
    """

    def decorator(fn: Callable[[T], Any]) -> Callable[[], None]:
        @hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)
        def entry(cfg: DictConfig) -> None:
            try:
                typed = to_object(cfg, schema)
            except OmegaConfBaseException as exc:
                print(f"error: invalid config: {exc}", file=sys.stderr)
                sys.exit(2)
            try:
                fn(typed)
            except NmtError as exc:
                if os.environ.get("NMT_DEBUG"):
                    raise
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(2)

        def main() -> None:
            # Hydra names its log after the module that called hydra.main (this one); name it after the script
            sys.argv.append(f"hydra.job.name={Path(sys.argv[0]).stem}")
            if os.environ.get("RANK", "0") != "0":
                # torchrun starts one copy per process: only rank 0 keeps Hydra's log file and config snapshot
                sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none"]
            entry()

        return main

    return decorator
