"""What a user gets from pip: the method alone needs torch and safetensors; the wheel carries conf/, so the
console scripts run from any directory; the framework imports without the optional extras.

Fresh virtual environments are made without network: a new venv sees only the distributions a test links
into it (a .pth file naming a folder of links), so nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[2]
# What pip reads: the installed metadata of pyproject.toml (make install reinstalls when pyproject changes).
REQUIREMENTS = [Requirement(line) for line in metadata.requires("lorma-exp") or []]
CORE = [requirement for requirement in REQUIREMENTS if requirement.marker is None]
EXTRAS = metadata.metadata("lorma-exp").get_all("Provides-Extra") or []


def extra_requirements(extra: str) -> list[Requirement]:
    return [r for r in REQUIREMENTS if r.marker is not None and r.marker.evaluate({"extra": extra})]


CONSOLE_SCRIPTS = ("lorma-train", "lorma-eval", "lorma-report", "lorma-export", "lorma-reproduce")


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions ``requirements`` need, with theirs (their extras and this machine's
    markers applied)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(line) for line in requirements]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        key = (_normalised(requirement.name), frozenset(requirement.extras))
        if key in done:
            continue
        done.add(key)
        distribution = seen.setdefault(key[0], metadata.distribution(requirement.name))
        for line in distribution.requires or []:
            needed = Requirement(line)
            extras = ["", *requirement.extras]
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(needed)
    return list(seen.values())


def link_distributions(distributions: list[metadata.Distribution], folder: Path) -> None:
    """Links into ``folder`` the top-level files and folders each distribution installed (its RECORD)."""
    folder.mkdir(parents=True, exist_ok=True)
    for distribution in distributions:
        root = Path(distribution.locate_file(""))
        tops = {Path(file).parts[0] for file in distribution.files or [] if not str(file).startswith("..")}
        for top in tops:
            target = folder / top
            if (root / top).exists() and not target.exists():
                target.symlink_to(root / top)


def fresh_venv(path: Path, site_folders: list[Path]) -> Path:
    """A new venv (no pip, no system site-packages) that also sees ``site_folders``; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "test_links.pth").write_text("".join(f"{folder}\n" for folder in site_folders))
    return python


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the repository on PYTHONPATH (a venv must find only what it holds)."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def test_the_distribution_itself_requires_only_torch_and_safetensors():
    """safetensors with its torch extra: it writes torch tensors through numpy, which it otherwise omits."""
    assert {requirement.name for requirement in CORE} == {"torch", "safetensors"}


def test_the_extras_are_the_documented_ones_and_all_is_what_make_install_installs():
    assert {"train", "nlg", "maths", "wandb", "slurm", "gguf", "vllm", "all", "dev"} == set(EXTRAS)
    (everything,) = extra_requirements("all")
    assert everything.name == "lorma-exp"
    assert set(everything.extras) == set(EXTRAS) - {"all", "dev", "vllm"}
    assert "'.[all,dev]'" in (REPO_ROOT / "Makefile").read_text()


def test_no_declared_dependency_is_left_that_nothing_imports():
    """accelerate was declared and never imported; each declared package is used by the source or named
    as a runtime need (gguf: transformers reads GGUF files with it; the Hydra launchers are plugins)."""
    imported_by_name = {
        "huggingface-hub": "huggingface_hub",
        "scikit-learn": "sklearn",
        "hydra-core": "hydra",
        "reasoning-gym": "reasoning_gym",
        "hydra-joblib-launcher": "hydra/launcher=joblib",
        "hydra-submitit-launcher": "submitit",
        "gguf": "gguf_file",
        "vllm": "vllm",
        "pycocoevalcap": "pycocoevalcap",
    }
    sources = "\n".join(
        path.read_text() for folder in ("src", "scripts") for path in (REPO_ROOT / folder).rglob("*.py")
    )
    sources += "\n".join(path.read_text() for path in (REPO_ROOT / "conf").rglob("*.yaml"))
    sources += (REPO_ROOT / "README.md").read_text()
    declared = [requirement.name for requirement in REQUIREMENTS if requirement.name != "lorma-exp"]
    for name in declared:
        if name in ("pytest", "pytest-xdist", "ruff"):
            continue
        needle = imported_by_name.get(name, name.replace("-", "_"))
        assert needle in sources, f"{name} is declared but nothing uses it"
    assert "accelerate" not in declared


def test_the_adapter_library_runs_in_a_venv_holding_only_torch_and_safetensors(tmp_path):
    links = tmp_path / "links"
    link_distributions(dependency_closure([str(requirement) for requirement in CORE]), links)
    (links / "lorma_exp").symlink_to(REPO_ROOT / "src" / "lorma_exp")
    python = fresh_venv(tmp_path / "venv", [links])
    script = textwrap.dedent(
        """
        import sys
        import torch
        from lorma_exp.adapters import AdapterConfig, inject_adapters, load_adapters, save_adapters

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.query = torch.nn.Linear(8, 8)
                self.value = torch.nn.Linear(8, 8)

            def forward(self, x):
                return self.value(self.query(x))

        torch.manual_seed(0)
        model = inject_adapters(Tiny(), AdapterConfig(method="lorma", inflation="rri", mode="pre", r=2, alpha=4,
                                                      targets=["query", "value"]))
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                torch.nn.init.normal_(parameter)
        save_adapters(model, sys.argv[1])
        torch.manual_seed(0)
        loaded = load_adapters(Tiny(), sys.argv[1])
        x = torch.randn(3, 8)
        assert torch.equal(model(x), loaded(x))
        for absent in ("transformers", "hydra", "omegaconf", "peft"):
            assert absent not in sys.modules, absent
        print("library ok")
        """
    )
    result = subprocess.run(
        [str(python), "-c", script, str(tmp_path / "adapter")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "library ok" in result.stdout
    with pytest.raises(subprocess.CalledProcessError):  # and the venv really lacks the framework
        subprocess.run(
            [str(python), "-c", "import transformers"], check=True, env=clean_env(), capture_output=True
        )


def repository_site_packages() -> Path:
    return Path(next(path for path in sys.path if path.endswith("site-packages") and Path(path).is_dir()))


@pytest.mark.slow  # builds a wheel and a venv: about a minute on 2 cores
def test_the_wheel_carries_conf_and_its_console_scripts_run_from_any_directory(tmp_path):
    wheels = tmp_path / "wheels"
    # Built from a copy: setuptools leaves an egg-info beside the sources, which would shadow the
    # installed metadata of the repository's own environment.
    source = tmp_path / "source"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "outputs", "tests", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            ".",
        ],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("lorma_exp-*.whl")
    # The framework's dependencies come from this environment's site-packages, listed after the venv's own.
    python = fresh_venv(tmp_path / "venv", [repository_site_packages()])
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bin_dir = python.parent
    env = clean_env(HF_HUB_OFFLINE="1")
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import lorma_exp.conf_dir as c, lorma_exp; print(lorma_exp.__file__); print(c.CONF_DIR)",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split()
    assert all(Path(path).is_relative_to(tmp_path / "venv") for path in where), where
    shown = subprocess.run(
        [str(bin_dir / "lorma-train"), "task=cola", "--cfg", "job", "r=4"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "name: cola" in shown.stdout and "r: 4" in shown.stdout
    listed = subprocess.run(
        [str(bin_dir / "lorma-reproduce"), "--list"], cwd=elsewhere, capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0 and "table2" in listed.stdout, listed.stderr[-2000:]
    assert all((bin_dir / script).is_file() for script in CONSOLE_SCRIPTS)
    assert not list(elsewhere.iterdir())  # --cfg job and --list write nothing


def test_the_lock_file_holds_the_versions_these_tests_run_with_and_make_install_uses_it():
    lines = [
        line
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    pinned = dict(line.split("==") for line in lines)
    assert {"transformers", "peft", "hydra-core", "datasets"} <= {_normalised(name) for name in pinned}
    assert "torch" not in pinned  # the Makefile's TORCH chooses it (a CUDA build on GPU machines)
    for name, version in pinned.items():
        assert metadata.version(name) == version, (
            f"{name}: locked {version}, installed {metadata.version(name)}"
        )
    assert "-c $(LOCK)" in (REPO_ROOT / "Makefile").read_text()
