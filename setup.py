"""Everything else is in pyproject.toml; this adds one build step: conf/ (the Hydra configs, kept at the
repository root where users read them) is copied into the wheel as ``lorma_exp/conf``, so that the console
scripts find their configs from any directory after ``pip install`` (lorma_exp/conf_dir.py)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the repository's conf/ directly
            self.copy_tree("conf", str(Path(self.build_lib) / "lorma_exp" / "conf"))


setup(cmdclass={"build_py": BuildWithConfigs})
