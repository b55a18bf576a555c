"""Re-evaluate a finished run's saved adapter on any split of its task (see conf/eval.yaml).

python eval.py run_dir=outputs/default/<run> splits=[validation] weights=adapter_best
"""

import hydra
from omegaconf import DictConfig

from lorma_exp.launch import prepare_launch
from lorma_exp.pipeline import evaluate

prepare_launch()


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
