"""Re-evaluate a finished run's saved weights on any split of its task (see conf/eval/eval.yaml).

python eval.py run_dir=outputs/default/<run> splits=[validation] weights=adapter_best
"""

import hydra
from omegaconf import DictConfig

from lorma_exp.launch import prepare_launch
from lorma_exp.pipeline import evaluate

prepare_launch()


# Its own config folder: with conf/task/ in the search path, Hydra would take `task=gsm8k` for a choice of
# that config group and refuse it; here it is the value of EvalConfig.task.
@hydra.main(config_path="conf/eval", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
