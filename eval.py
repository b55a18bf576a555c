"""Re-evaluate a finished run's saved weights on any split of its task (see conf/eval/eval.yaml; the same
app as the `lorma-eval` command).

python eval.py run_dir=outputs/default/<run> splits=[validation] weights=adapter_best
"""

from lorma_exp.cli import evaluate

if __name__ == "__main__":
    evaluate()
