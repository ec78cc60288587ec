"""The `nmt` command line: its table of commands, the dispatcher (help, typos), each command's Hydra `--help`,
user errors as one line, and what `nmt translate` imports."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import is_dataclass
from pathlib import Path

import pytest

from nmt.cli import CONF_DIR, main, with_overrides
from nmt.commands import COMMANDS, load
from nmt.config import SearchConfig

REPO = Path(__file__).resolve().parents[1]


def nmt(
    *args: str, cwd: Path = REPO, stdin: str = "", env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m nmt ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "nmt", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


# ---------------------------------------------------------------------------------------- the table
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_names_real_code_and_config(name):
    command = COMMANDS[name]
    if command.config is None:
        assert callable(load(command.run))
        return
    config_dir = CONF_DIR / command.config_dir
    assert (config_dir / f"{command.config}.yaml").is_file()
    assert is_dataclass(load(command.schema)) and callable(load(command.run))
    for group in command.groups:
        assert list((config_dir / group).glob("*.yaml")), f"{name}: no options in group {group}"


def test_each_script_is_an_alias_of_the_command_named_after_it():
    scripts = {}
    for path in sorted((REPO / "scripts").glob("*.py")):
        calls = [
            node.args[0].value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_command"
        ]
        assert len(calls) == 1, f"{path.name} should only call run_command(NAME)"
        scripts[path.stem] = calls[0]
    assert {COMMANDS[name].script: name for name in scripts.values()} == scripts
    assert sorted(scripts.values()) == sorted(COMMANDS)  # every command has its script


# ---------------------------------------------------------------------------------------- dispatcher
def test_help_lists_every_command_with_its_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name, command in COMMANDS.items():
        assert any(line.split(None, len(name.split())) == [*name.split(), command.help] for line in lines), (
            name
        )


def test_no_command_prints_the_overview_and_fails(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2 and "commands:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [(["trian"], "train"), (["evalute", "split=test"], "evaluate"), (["recipe", "stok"], "recipe stock")],
)
def test_a_typo_fails_with_the_closest_command(capsys, monkeypatch, args, suggestion):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/nmt", *args])  # as the console script starts it
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"error: unknown command {' '.join(args[: len(suggestion.split())])!r}")
    assert f"did you mean `nmt {suggestion}`? (`nmt --help` lists the commands)" in err


def test_an_unknown_word_far_from_any_command_gets_no_guess(capsys):
    with pytest.raises(SystemExit):
        main(["xyzzy"])
    err = capsys.readouterr().err
    assert "unknown command 'xyzzy'" in err and "did you mean" not in err


def test_an_override_before_the_command_says_the_command_comes_first(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["model_dir=runs/x", "translate"])
    assert exit_.value.code == 2 and "a command comes first" in capsys.readouterr().err


def test_recipe_alone_lists_the_recipes(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["recipe", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert [line.split()[1] for line in out.splitlines() if line.startswith("  recipe ")] == [
        name.split()[1] for name in COMMANDS if name.startswith("recipe ")
    ]


# ------------------------------------------------------------------------------- each command's --help
@pytest.mark.slow
def test_translate_help_names_the_command_and_shows_its_defaults():
    done = nmt("translate", "--help")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith(f"python -m nmt translate: {COMMANDS['translate'].help}\n")
    assert "model_dir: ???" in out and f"  beam_size: {SearchConfig().beam_size}\n" in out
    assert "Config groups" not in out  # translate composes no groups; the training groups would mislead
    assert "$" not in out  # every placeholder of Hydra's template was filled


@pytest.mark.slow
def test_train_help_lists_its_groups_with_the_defaults_marked():
    done = nmt("train", "train=smoke", "--help")
    assert done.returncode == 0, done.stderr
    section = done.stdout.split("== Config groups ==")[1].split("== Config ==")[0]
    groups: dict[str, list[str]] = {}
    for line in section.replace(",", " ").splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("   "):  # a group; deeper: its options, continued
            label, *options = line.split()
            groups[label] = options
        elif line.strip():
            groups[label] += line.split()
    assert list(groups) == ["data", "model", "train", "+variant", "+study"]
    options = {
        group: sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
        for group in ("data", "variant")
    }
    assert groups["data"] == [f"{name}*" if name == "bible" else name for name in options["data"]]
    assert groups["model"] == ["default*"] and "smoke" in groups["train"] and "default*" in groups["train"]
    assert groups["+variant"] == options["variant"]  # an optional preset: none is the default
    assert "  max_steps: 30\n" in done.stdout  # the config shown is composed with the overrides given (smoke)


@pytest.mark.slow
def test_a_script_help_names_the_script():
    done = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith("python scripts/evaluate.py: ")


@pytest.mark.slow
def test_load_test_help_is_its_own_argparse_help():
    done = nmt("load_test", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m nmt load_test [-h] [--url URL]")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["ours=1"]),
        (["a=1", "+b=2"], ["ours=1", "a=1", "+b=2"]),
        (["-m", "a=1,2"], ["-m", "ours=1", "a=1,2"]),
        (["--cfg", "job", "~a"], ["--cfg", "job", "ours=1", "~a"]),
        (["--info"], ["ours=1", "--info"]),  # not after it: --info would take ours as its optional value
    ],
)
def test_our_overrides_join_the_users_run_of_overrides(args, expected):
    assert with_overrides(args, ["ours=1"]) == expected


@pytest.mark.slow
def test_flags_after_overrides_still_work():
    done = nmt("translate", "search.beam_size=3", "--cfg", "job")
    assert done.returncode == 0, done.stderr
    assert "  beam_size: 3\n" in done.stdout and "model_dir: ???" in done.stdout


# -------------------------------------------------------------------------------------- running commands
@pytest.mark.slow
def test_a_user_error_is_one_line_with_exit_status_2(tmp_path):
    done = nmt("translate", f"model_dir={tmp_path / 'nope'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: model_dir={tmp_path / 'nope'}: not a directory (point it at a training run directory)"
    ]
    debug = nmt("translate", f"model_dir={tmp_path / 'nope'}", cwd=tmp_path, env={"NMT_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "load_model_dir" in debug.stderr


@pytest.mark.slow
def test_an_invalid_value_is_reported_as_invalid_config(tmp_path):
    done = nmt("evaluate", "hyp=h", "refs=[r]", "search.beam_size=0", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: invalid config: ")
    assert "beam_size" in done.stderr and "Traceback" not in done.stderr


HEAVY = ("datasets", "matplotlib", "tensorboard", "torch.utils.tensorboard", "sacrebleu", "fastapi")
PROBE = f"""
import sys
from nmt.cli import main
try:
    main()
finally:
    print("heavy:", [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
"""


@pytest.mark.slow
def test_translate_imports_neither_data_sets_nor_plotting(digit_model_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "translate", f"model_dir={digit_model_dir}", "device=cpu"],
        cwd=tmp_path,
        input="three one\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "trois un\n"
    assert done.stderr.splitlines()[-1] == "heavy: []"


@pytest.mark.slow
def test_the_dispatcher_runs_a_command_with_its_overrides(digit_model_dir, tmp_path):
    done = nmt(
        "evaluate",
        f"model_dir={digit_model_dir}",
        "split=test",
        f"output={tmp_path / 'test.json'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    scores = json.loads((tmp_path / "test.json").read_text())
    assert scores["split"] == "test" and scores["n_sentences"] == 16 and scores["bleu"] > 50
