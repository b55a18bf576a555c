"""Train one run, or a sweep with -m, from conf/config.yaml.

python train.py                                   # the embedded default, offline
python train.py task=cola model=roberta_base method=lorma_plus r=8 seed=1
python train.py task=cola method=lorma_plus r=8 -m seed=1,2,3
torchrun --nproc_per_node=2 train.py task=sst2 trainer=ddp
"""

import hydra
from omegaconf import DictConfig

from lorma_exp.launch import prepare_launch
from lorma_exp.pipeline import train

prepare_launch()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
