"""Train one run, or a sweep with -m, from conf/config.yaml (the same app as the `lorma-train` command).

python train.py                                   # the embedded default, offline
python train.py task=cola model=roberta_base method=lorma_plus r=8 seed=1
python train.py task=cola method=lorma_plus r=8 -m seed=1,2,3
torchrun --nproc_per_node=2 train.py task=sst2 trainer=ddp
"""

from lorma_exp.cli import train

if __name__ == "__main__":
    train()
