"""Where the Hydra configs are: one answer for train.py, eval.py, the console scripts and the tests.

The configs live in ``conf/`` at the repository root (where users read and edit them). A wheel carries a
copy inside the package, ``lorma_exp/conf`` (setup.py copies it at build time), so that ``lorma-train``
and the other console scripts work from any directory after ``pip install``. An editable install or a
checkout has no copy and reads the repository's ``conf/``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
REPOSITORY_CONF = Path(__file__).resolve().parents[2] / "conf"


def conf_dir() -> Path:
    """The packaged copy when the package was installed from a wheel, else the repository's ``conf/``."""
    return PACKAGED_CONF if PACKAGED_CONF.is_dir() else REPOSITORY_CONF


CONF_DIR = conf_dir()
