"""What the entry points do before Hydra starts: register the schema, refuse a resume of nothing, and
agree on one run folder.

Hydra creates the run folder before any of our code runs, so ``resume=true run_dir=X`` with no run in X
is refused here, before X is created. Under torchrun every rank runs Hydra, and Hydra names the run
folder from the clock; ranks starting a second apart would scatter a run over several folders. So the
process group is joined first, rank 0's time stamp is shared through ``LORMA_RUN_STAMP``, and ranks other
than 0 are told not to write Hydra's own files or logs.
"""

from __future__ import annotations

import os
import sys

from lorma_exp.config import RUN_STAMP_ENV, ConfigError, register_configs, run_stamp
from lorma_exp.distributed import broadcast_object, init_distributed, launched_world_size
from lorma_exp.resume import check_resume_arguments

QUIET_RANK_OVERRIDES = (
    "hydra.output_subdir=null",
    "hydra/job_logging=disabled",
    "hydra/hydra_logging=disabled",
)


def prepare_launch() -> None:
    """Call once, before the ``@hydra.main`` function runs."""
    register_configs()
    try:
        check_resume_arguments(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if launched_world_size() <= 1:
        return
    env = init_distributed()
    os.environ[RUN_STAMP_ENV] = broadcast_object(run_stamp(), env)
    if not env.is_main:
        sys.argv.extend(QUIET_RANK_OVERRIDES)
