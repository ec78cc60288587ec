"""The toolkit as people install it: the wheel holds the configs and the `nmt` command, and once installed in a
fresh virtual environment it trains, translates, evaluates and plots from an empty directory, with no clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nmt.cli import CONF_DIR
from nmt.commands import COMMANDS

pytestmark = pytest.mark.slow  # subprocesses and end-to-end runs: minutes, not seconds

REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def source_files() -> list[str]:
    """The files of the working tree that git would commit (tracked or new, not ignored), as relative paths."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files belong to the source tree")
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    return [path for path in listed if path and os.path.lexists(REPO / path)]


@pytest.fixture(scope="module")
def wheel(source_files, tmp_path_factory) -> Path:
    """The wheel built, offline, from a copy of the source tree (the build leaves nothing in the checkout)."""
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("build")
    for relative in source_files:
        target = root / "src" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target, follow_symlinks=False)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist"]
    # "./src", not "src": a bare name is a requirement, looked up in the package index
    done = subprocess.run([*build, "./src"], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (built,) = (root / "dist").glob("nmt-*.whl")
    return built


def test_conf_at_the_top_is_a_link_git_stores_to_the_packaged_configs():
    assert (REPO / "conf").is_symlink() and (REPO / "conf").resolve() == CONF_DIR
    if (REPO / ".git").exists() and shutil.which("git"):
        mode, *_ = git("ls-files", "--stage", "conf").split()
        assert mode == "120000"  # a symlink, not a copy of the folder


def test_the_wheel_ships_every_config_the_static_page_and_the_command(wheel, source_files):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    configs = {path for path in source_files if path.startswith("nmt/conf/") and path.endswith(".yaml")}
    assert configs and configs <= names
    assert {path for path in source_files if path.startswith("nmt/serve/static/")} <= names
    assert not any(name.startswith(("conf/", "scripts/", "tests/")) for name in names)
    assert "[console_scripts]\nnmt = nmt.cli:main\n" in scripts


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; it sees the dependencies already installed here
    (offline), but its own copy of nmt shadows this checkout's editable install."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True, timeout=300
    )
    install = [root / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # --ignore-installed: the editable install of the same version is visible through the system site-packages
    done = subprocess.run(
        [*install, "--no-deps", "--ignore-installed", str(wheel)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return root


def test_the_installed_command_trains_translates_evaluates_and_plots_from_an_empty_directory(venv, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "NMT_DEBUG")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", HF_HOME=str(tmp_path / "hf"))

    def nmt(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            ["nmt", *args], cwd=work, env=env, input=stdin, capture_output=True, text=True, timeout=600
        )

    where = subprocess.run(
        ["python", "-c", "import nmt.cli; print(nmt.__file__); print(nmt.cli.CONF_DIR)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(path).is_relative_to(venv) for path in where), (
        where
    )  # the wheel's copy, not the checkout's

    listing = nmt("--help")
    assert listing.returncode == 0
    assert all(f"  {name}  " in listing.stdout for name in COMMANDS)
    typo = nmt("trian")
    assert typo.returncode == 2 and "did you mean `nmt train`?" in typo.stderr

    trained = nmt("train", "train=smoke", "run_dir=m", f"data.cache_dir={tmp_path / 'cache'}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.loads((work / "m" / "metrics.json").read_text())
    assert metrics["steps"] == 30  # train/smoke.yaml, read from the installed package
    assert (work / "m" / "checkpoints" / "best.pt").is_file() and (work / "m" / "train.log").is_file()

    translated = nmt("translate", "model_dir=m", stdin="And God said.\n")
    assert translated.returncode == 0, translated.stderr[-3000:]
    lines = translated.stdout.splitlines()
    assert len(lines) == 1 and lines[0].strip()

    evaluated = nmt("evaluate", "model_dir=m", "split=test", "search.beam_size=1")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scores = json.loads((work / "m" / "eval" / "test.json").read_text())
    assert scores["split"] == "test" and scores["n_sentences"] > 0 and 0 <= scores["bleu"] <= 100

    sentences = "sentences=[And God said.,In the beginning.]"
    plotted = nmt("visualize", "model_dir=m", sentences, "out_dir=plots", "formats=[png]")
    assert plotted.returncode == 0, plotted.stderr[-3000:]
    plots = sorted((work / "plots").iterdir())
    assert [path.name for path in plots] == ["attention_01.png", "attention_02.png", "attention_grid.png"]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in plots)
    assert any((tmp_path / "cache").iterdir())  # the prepared corpus went where data.cache_dir said
