"""Small maths data in the shapes of MetaMathQA, GSM8K and MATH, for the tests (not from the datasets)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lorma_exp.distributed import DistEnv

CPU = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def write_json_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def metamathqa_rows(count: int) -> list[dict]:
    """MetaMathQA-shaped rows whose question names its index; even rows GSM-type, odd rows MATH-type."""
    rows = []
    for index in range(count):
        if index % 2 == 0:
            rows.append(
                {
                    "query": f"Problem {index}: Tom has {index} apples and buys 3 more. How many now?",
                    "response": f"He has {index} + 3 = {index + 3} apples.\nThe answer is: {index + 3}",
                    "type": "GSM_Rephrased",
                    "original_question": "unused",
                }
            )
        else:
            rows.append(
                {
                    "query": f"Problem {index}: What is $\\frac{{{index}}}{{2}}$ as a fraction?",
                    "response": f"It is $\\boxed{{\\frac{{{index}}}{{2}}}}$.\nThe answer is: \\frac{{{index}}}{{2}}",
                    "type": "MATH_AnsAug",
                    "original_question": "unused",
                }
            )
    return rows


GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 friends in April, and half as many in May. How many in total?",
        "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72 clips.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour. She worked 50 minutes. How much did she earn?",
        "answer": "She earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nSo 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "A shirt costs $1,200 after a $300 discount. What was the price before?",
        "answer": "It was 1,200 + 300 = <<1200+300=1500>>1,500 dollars.\n#### 1,500",
    },
]

MATH_ROWS = [
    {
        "problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
        "solution": "We have $\\frac{2}{4} + \\frac{1}{4} = \\boxed{\\frac{3}{4}}$.",
        "level": "Level 1",
        "type": "Prealgebra",
    },
    {
        "problem": "Solve $2x = 10$.",
        "solution": "Dividing by 2, $x = \\boxed{5}$.",
        "level": "Level 1",
        "type": "Algebra",
    },
]
