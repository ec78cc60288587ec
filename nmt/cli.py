"""The command line: ``nmt COMMAND [group=option ...] [key=value ...]``, also ``python -m nmt`` and the thin
``scripts/*.py``. A command's Hydra config is composed into its dataclass; an :class:`NmtError` is reported as
one line.

Hydra, OmegaConf and the command's own modules are imported only once a command runs: ``nmt --help`` stays
instant and ``nmt translate`` loads what translation needs, not the training stack.
"""

from __future__ import annotations

import difflib
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from nmt.commands import COMMANDS, Command, load
from nmt.package_data import CONF_DIR

_GROUP_WORDS = sorted({name.split()[0] for name in COMMANDS if " " in name})  # "recipe"
_HELP_FLAGS = ("-h", "--help")


def main(argv: list[str] | None = None) -> None:
    """``nmt COMMAND ...``: find the command named by the first word(s) of ``argv`` (default ``sys.argv[1:]``)
    and run it with the rest."""
    args = sys.argv[1:] if argv is None else list(argv)
    prog = program_name(sys.argv[0])
    if not args or args[0] in _HELP_FLAGS:
        print(overview(prog), file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    if args[0] == "--version":
        from nmt import __version__

        print(f"nmt {__version__}")
        return
    command, rest = find_command(args, prog)
    run_command(command.name, rest, f"{prog} {command.name}")


def program_name(argv0: str) -> str:
    """How the user started us, for usage lines: ``nmt``, or ``python -m nmt`` (argv[0]: ``__main__.py``)."""
    return "python -m nmt" if Path(argv0).name == "__main__.py" else Path(argv0).name


def overview(prog: str) -> str:
    """``nmt --help``: every command with its one line."""
    return "\n".join(
        [
            f"usage: {prog} COMMAND [group=option ...] [key=value ...]",
            "",
            "commands:",
            *_rows(list(COMMANDS)),
            "",
            f"`{prog} COMMAND --help` lists a command's config groups and its defaults; `-m` sweeps",
            f"comma-separated values (a Hydra multirun), e.g. `{prog} train -m train.lr=1e-3,3e-3`.",
        ]
    )


def _rows(names: list[str]) -> list[str]:
    """One aligned line per command: its name and its help."""
    width = max(len(name) for name in names) + 2
    return [f"  {name:<{width}}{COMMANDS[name].help}" for name in names]


def find_command(args: list[str], prog: str) -> tuple[Command, list[str]]:
    """The command the first word (two for a group such as ``recipe stock``) of ``args`` names, and the rest.

    A word that names no command exits with status 2 and the closest command's name.
    """
    if args[0] in _GROUP_WORDS:
        group = args[0]
        members = [name for name in COMMANDS if name.startswith(f"{group} ")]
        if len(args) < 2 or args[1] in _HELP_FLAGS:
            listing = "\n".join([f"usage: {prog} {group} NAME [key=value ...]", "", *_rows(members)])
            print(listing, file=sys.stdout if args[1:] else sys.stderr)
            sys.exit(0 if args[1:] else 2)
        name, rest = f"{group} {args[1]}", args[2:]
    else:
        name, rest = args[0], args[1:]
    if name not in COMMANDS:
        _unknown_command(name, prog)
    return COMMANDS[name], rest


def _unknown_command(name: str, prog: str) -> NoReturn:
    if "=" in name:
        message = f"a command comes first: `{prog} COMMAND {name} ...`"
    else:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
        guess = f"; did you mean `{prog} {close[0]}`?" if close else ""
        message = f"unknown command {name!r}{guess}"
    print(f"error: {message} (`{prog} --help` lists the commands)", file=sys.stderr)
    sys.exit(2)


def run_command(name: str, args: list[str] | None = None, usage: str | None = None) -> None:
    """Run the command ``name`` with ``args`` (default ``sys.argv[1:]``, as the scripts call it); ``usage`` is
    how help texts name it (default ``python <argv[0]>``)."""
    command = COMMANDS[name]
    args = sys.argv[1:] if args is None else args
    usage = usage or f"python {sys.argv[0]}"
    if command.config is None:
        _report_errors(lambda: load(command.run)(args, usage))
    else:
        run_hydra(command, args, usage)


def run_hydra(command: Command, args: list[str], usage: str) -> None:
    """Compose ``command``'s config from ``args`` (Hydra overrides and flags) and call its function with the
    typed config.

    A user error (:class:`NmtError`) is printed as one line on stderr with exit status 2, without a traceback,
    unless ``NMT_DEBUG=1``. Under ``torchrun`` (RANK set), ranks other than 0 write no Hydra log or config
    files. Hydra's job name (its log file's name) is the script's name, however the command was started.
    """
    import hydra
    from omegaconf import DictConfig
    from omegaconf.errors import OmegaConfBaseException

    from nmt.config import to_object
    from nmt.errors import NmtError

    schema = load(command.schema)  # importing a schema's module registers its configs with Hydra

    @hydra.main(
        version_base="1.3", config_path=str(CONF_DIR / command.config_dir), config_name=command.config
    )
    def entry(cfg: DictConfig) -> None:
        def work() -> None:
            try:
                typed = to_object(cfg, schema)
            except OmegaConfBaseException as exc:
                raise NmtError(f"invalid config: {exc}") from exc
            load(command.run)(typed)  # only now: `--help` needs none of the command's own modules

        _report_errors(work)

    if command.rewrite_argv:
        args = load(command.rewrite_argv)([usage, *args])[1:]
    ours = [f"hydra.job.name={command.script}"]
    if os.environ.get("RANK", "0") != "0":
        # torchrun starts one copy per process: only rank 0 keeps Hydra's log file and config snapshot
        ours += ["hydra.output_subdir=null", "hydra/job_logging=none"]
    if any(flag in args for flag in _HELP_FLAGS):
        ours.append(f"hydra/help={_register_help(command, usage)}")
    # Hydra parses sys.argv itself: hand it the overrides without the command word(s)
    sys.argv = [sys.argv[0], *with_overrides(args, ours)]
    entry()


def with_overrides(args: list[str], extra: list[str]) -> list[str]:
    """``args`` with the overrides ``extra`` placed just before the user's first override (at the front when
    there is none): Hydra's argparse parser reads the overrides only as one run of positional arguments, not
    split by a flag (``a=1 --cfg job b=2`` fails), and an optional flag value (``--info``) must not take ours."""
    first = next((i for i, arg in enumerate(args) if _is_override(arg)), 0)
    return [*args[:first], *extra, *args[first:]]


def _is_override(arg: str) -> bool:
    """``key=value``, ``+key=value``, ``++key=value``, ``~key``; not a flag nor a flag's value (``--cfg job``)."""
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def _report_errors(work: Callable[[], object]) -> None:
    """Run ``work()``; an :class:`NmtError` becomes one line on stderr and exit status 2 (``NMT_DEBUG=1``: the
    traceback instead)."""
    from nmt.errors import NmtError

    try:
        work()
    except NmtError as exc:
        if os.environ.get("NMT_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _register_help(command: Command, usage: str) -> str:
    """Store ``command``'s ``--help`` page in Hydra's ConfigStore as a ``hydra/help`` option; its name."""
    from hydra.core.config_store import ConfigStore

    name = "nmt_command"
    node = {"app_name": usage, "header": "", "footer": "", "template": help_template(command, usage)}
    ConfigStore.instance().store(group="hydra/help", name=name, node=node)
    return name


def help_template(command: Command, usage: str) -> str:
    """``COMMAND --help``: usage, the command's config groups (default marked), then Hydra's ``$CONFIG``, the
    composed config, which Hydra fills in."""
    config_dir = CONF_DIR / command.config_dir
    lines = [
        f"{usage}: {command.help}",
        "",
        f"usage: {usage} {'[group=option ...] ' if command.groups else ''}[key=value ...]",
        f"       {usage} -m key=a,b ...     (a Hydra multirun: one run per combination)",
    ]
    defaults = _default_options(config_dir / f"{command.config}.yaml")
    if command.groups:
        lines += ["", "== Config groups ==  (group=option; +group=option adds an optional preset; * default)"]
        width = max(len(group) for group in command.groups) + 3
        for group in command.groups:
            options = sorted(path.stem for path in (config_dir / group).glob("*.yaml"))
            marked = ", ".join(
                f"{option}*" if defaults.get(group) == option else option for option in options
            )
            label = f"  {group if group in defaults else '+' + group:<{width}}"
            lines += textwrap.wrap(marked, 110, initial_indent=label, subsequent_indent=" " * len(label))
    lines += [
        "",
        "== Config ==  (the defaults, with any overrides given; override any key: key=value)",
        "",
        "$CONFIG",
        f"Hydra's own flags (--cfg job, --info, -m, ...): {usage} --hydra-help",
    ]
    # string.Template fills $CONFIG: a literal $ elsewhere must be doubled
    return "\n".join(line if line == "$CONFIG" else line.replace("$", "$$") for line in lines)


def _default_options(primary: Path) -> dict[str, str]:
    """``{group: option}`` of a primary config's defaults list (``- data: bible`` → ``{"data": "bible"}``)."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.load(primary)).get("defaults", [])  # type: ignore[union-attr]
    return {
        group: option
        for entry in defaults
        if isinstance(entry, dict)
        for group, option in entry.items()
        if not group.startswith("override ")
    }
