"""Every command line in README.md and docs/*.md, taken literally, parses and composes offline.

A documented command is a line of a ``bash``/``sh``/``console`` code block (continuation lines joined) or an
inline code span that starts with one of our programs. Each is checked the way its program reads it, without
doing its work:

- ``python train.py`` / ``python eval.py`` / ``lorma-train`` / ``lorma-eval`` (and the ``train.py`` part of a
  ``torchrun`` line): the arguments go through what the entry point does before Hydra (``launch_arguments``),
  then Hydra's own argument parser, then every job of a sweep (Hydra's basic sweeper splits it) is composed;
  a training job is also validated as ``train.py`` validates it before loading anything.
- ``python -m lorma_exp.X`` / ``python scripts/X.py`` / the other console scripts: the module's ``main`` runs
  until its argument parser has parsed the line (an ``argparse`` error fails the test).
- ``make X``: ``make -n`` must know the target, and the lorma_exp command its recipe runs is checked as above.

Placeholders are substituted, never skipped: ``<run>`` (any ``<...>``) and a ``...`` standing for a folder
become a finished-looking run folder path, a lone ``...`` after overrides is dropped, ``a|b`` alternatives
are each checked, and the upper-case names in :data:`PLACEHOLDERS` get a value.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from lorma_exp.conf_dir import CONF_DIR
from lorma_exp.config import register_configs, validate
from lorma_exp.data import check_task
from lorma_exp.launch import launch_arguments

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.S | re.M)
INLINE_SPAN = re.compile(r"`((?:python |lorma-|torchrun |make )[^`]*)`")
# The programs of this project; any other program on a documented line fails the test unless listed in
# FOREIGN_PROGRAMS (their own projects check their syntax).
OUR_PROGRAMS = ("python", "lorma-train", "lorma-eval", "lorma-report", "lorma-export", "lorma-reproduce")
FOREIGN_PROGRAMS = ("pip", "git", "cd", "vllm", "huggingface-cli", "wandb", "java", "apt-get", "source")
PLACEHOLDERS = {
    "NAME": "table2",
    "REFS": "refs.txt",
    "HYPS": "hyps.txt",
    "ENTITY/PROJECT": "entity/project",
}
PLACEHOLDER_RUN = "outputs/default/placeholder-run"
# Programs that start one of ours on every node of a cluster job (their own options are not checked).
LAUNCHERS = ("srun",)
HYDRA_APPS = {"train.py": (CONF_DIR, "config"), "eval.py": (CONF_DIR / "eval", "eval")}
HYDRA_CONSOLE_SCRIPTS = {"lorma-train": "train.py", "lorma-eval": "eval.py"}


def documented_lines() -> Iterator[tuple[str, str]]:
    """(where, line) of every documented command of ours, continuation lines joined."""
    for document in DOCUMENTS:
        text = document.read_text()
        for block in SHELL_BLOCK.finditer(text):
            for number, line in enumerate(re.sub(r"\\\n\s*", " ", block.group(1)).splitlines()):
                if line.strip() and not line.lstrip().startswith("#"):
                    yield f"{document.name} block line {number + 1}", line
        for span in INLINE_SPAN.finditer(text):
            yield f"{document.name} inline", span.group(1)


def substituted(line: str) -> list[list[str]]:
    """The argument vectors a documented line stands for (see the module docstring)."""
    line = re.sub(r"<[^<>]+>", PLACEHOLDER_RUN, line)
    tokens = shlex.split(line, comments=True)
    while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # leading environment settings
        tokens.pop(0)
    vectors: list[list[str]] = [[]]
    for position, token in enumerate(tokens):
        token = PLACEHOLDERS.get(token, token)
        if token == "...":
            follows_flag = position > 0 and tokens[position - 1].startswith("--")
            if follows_flag:
                vectors = [[*vector, PLACEHOLDER_RUN] for vector in vectors]
            continue
        for name, value in PLACEHOLDERS.items():
            token = token.replace(f"-{name}", f"-{value}")
        key, equals, values = token.rpartition("=")
        choices = [f"{key}{equals}{value}" for value in values.split("|")]  # a|b, key=a|b: each
        vectors = [[*vector, choice] for vector in vectors for choice in choices]
    return vectors


class Parsed(Exception):
    """Raised instead of running the command, once its argument parser has taken the line."""


def argparse_accepts(main, argv: list[str], monkeypatch) -> None:
    """``main(argv)`` gets past its argument parser; a program named alone (in prose) must answer --help."""
    if not argv:
        with pytest.raises(SystemExit) as stopped:
            main(["--help"])
        assert stopped.value.code == 0
        return
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, args=None, namespace=None):
        original(parser, args, namespace)
        raise Parsed

    with monkeypatch.context() as patched:
        patched.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        with pytest.raises(Parsed):
            main(argv)


def hydra_app_composes(script: str, argv: list[str]) -> None:
    """What ``python <script> argv`` does up to the job: arrange, parse, split the sweep, compose, validate."""
    config_dir, config_name = HYDRA_APPS[script]
    parsed = get_args_parser().parse_args(launch_arguments(argv))  # argparse: SystemExit on a bad line
    overrides = OverridesParser.create().parse_overrides(parsed.overrides)
    if parsed.multirun:
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    else:
        swept = [override.input_line for override in overrides if override.is_sweep_override()]
        assert not swept, f"{swept}: a sweep needs -m"
        jobs = [list(parsed.overrides)]
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for job in jobs:
            cfg = compose(config_name, overrides=job, return_hydra_config=True)
            if script != "train.py":
                continue
            HydraConfig.instance().set_config(cfg)  # for the ${hydra:...} values validation resolves
            try:
                with open_dict(cfg):
                    del cfg["hydra"]
                check_task(validate(cfg).task)
            finally:  # no Hydra job is running: later in-process runs must not see one
                HydraConfig.instance().cfg = None


def console_script_main(name: str):
    """The function pip makes console script ``name`` call (pyproject.toml's ``[project.scripts]``)."""
    target = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"][name]
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def check_command(argv: list[str], monkeypatch) -> None:
    program, *arguments = argv
    if program in LAUNCHERS:  # `srun [options] torchrun ...`: the command it starts is checked
        started = next(i for i, token in enumerate(arguments) if not token.startswith("-"))
        check_command(arguments[started:], monkeypatch)
        return
    if program == "torchrun":
        script_at = next(i for i, token in enumerate(arguments) if token.endswith(".py"))
        program, arguments = "python", arguments[script_at:]
    if program in HYDRA_CONSOLE_SCRIPTS:
        hydra_app_composes(HYDRA_CONSOLE_SCRIPTS[program], arguments)
    elif program.startswith("lorma-"):
        argparse_accepts(console_script_main(program), arguments, monkeypatch)
    elif program == "make":
        check_make(arguments, monkeypatch)
    elif program == "python" and arguments[0] in HYDRA_APPS:
        hydra_app_composes(arguments[0], arguments[1:])
    elif program == "python" and arguments[0] == "-m":
        module = importlib.import_module(arguments[1])
        if not hasattr(module, "main"):
            module = importlib.import_module(f"{arguments[1]}.__main__")
        argparse_accepts(module.main, arguments[2:], monkeypatch)
    elif program == "python" and arguments[0].startswith("scripts/"):
        namespace: dict = {"__name__": "documented_script"}
        exec(compile((REPO_ROOT / arguments[0]).read_text(), arguments[0], "exec"), namespace)
        argparse_accepts(namespace["main"], arguments[1:], monkeypatch)
    else:
        raise AssertionError(f"{program} {arguments[:1]}: not a program this test knows how to check")


def check_make(arguments: list[str], monkeypatch) -> None:
    """``make -n`` knows the target; the lorma_exp command its recipe would run is checked too."""
    dry = subprocess.run(
        ["make", "-n", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert dry.returncode == 0, dry.stderr
    for line in dry.stdout.splitlines():
        found = re.search(r"-m (lorma_exp\.reproduce [^|;&]*)", line)
        if found:
            check_command(["python", "-m", *shlex.split(found.group(1))], monkeypatch)


ALL_LINES = list(documented_lines())


def test_the_documents_hold_the_headline_command_exactly():
    lines = [line for _, line in ALL_LINES]
    assert any(
        line.split("#")[0].strip() == "python train.py task=cola method=lorma_plus r=8 -m seed=1,2,3"
        for line in lines
    )
    assert len(ALL_LINES) > 40


@pytest.mark.parametrize(("where", "line"), ALL_LINES, ids=[f"{w}: {line[:60]}" for w, line in ALL_LINES])
def test_a_documented_command_parses_and_composes(where, line, monkeypatch):
    first = shlex.split(line, comments=True)
    first = [token for token in first if not re.fullmatch(r"[A-Z_]+=\S*", token)][:1]
    if first and first[0] in FOREIGN_PROGRAMS:
        pytest.skip(f"{first[0]} is another project's program")
    assert first and first[0] in (*OUR_PROGRAMS, *LAUNCHERS, "torchrun", "make"), (
        f"{where}: unknown program in {line!r}"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for argv in substituted(line):
        check_command(argv, monkeypatch)


def test_a_wrong_documented_line_would_fail(monkeypatch):
    """The checks can fail: an override after -m with a typo, an unknown report command, a bad make target."""
    with pytest.raises(ConfigCompositionException):  # no key "sed"
        check_command(["python", "train.py", "task=cola", "-m", "sed=1,2"], monkeypatch)
    with pytest.raises(SystemExit):
        check_command(["python", "-m", "lorma_exp.report", "tabel", "--runs", "x"], monkeypatch)
    with pytest.raises(SystemExit):
        check_command(["make", "reproduce-table99x"], monkeypatch)
    with pytest.raises(AssertionError, match="sweep needs -m"):
        check_command(["python", "train.py", "seed=1,2"], monkeypatch)
