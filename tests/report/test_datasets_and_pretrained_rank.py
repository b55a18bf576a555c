"""Table 12 (dataset statistics) and the full-rank check of pretrained weights, on data and backbones whose
answers are counted independently: the user's CSV files and tiny models with constructed weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from lorma_exp.analysis import datasets, pretrained_rank
from lorma_exp.config import compose_train, validate
from lorma_exp.models import resolve_name_or_path
from lorma_exp.report import main

HIDDEN = 16


def write_csv(path, rows):
    lines = ["review,sentiment", *(f'"{text}",{label}' for text, label in rows)]
    path.write_text("\n".join(lines) + "\n")


def test_dataset_statistics_count_the_rows_and_tokens_the_run_reads(tmp_path):
    train = [("a wonderful little film", "pos"), ("dull and far too long", "neg"), ("a joy", "pos")] * 7
    validation = train[:5]
    write_csv(tmp_path / "train.csv", train)
    write_csv(tmp_path / "dev.csv", validation)
    settings = validate(
        compose_train(
            [
                "task=text_classification",
                f"data.train_file={tmp_path / 'train.csv'}",
                f"data.validation_file={tmp_path / 'dev.csv'}",
                "data.text_fields=[review]",
                "data.label_field=sentiment",
                "data.max_length=6",
            ]
        )
    )
    record = datasets.dataset_statistics(settings)
    assert (record["train"], record["validation"], record["classes"]) == (21, 5, 2)
    # The tokenizer's own lengths, capped at max_length as the data module truncates.
    tokenizer = AutoTokenizer.from_pretrained(resolve_name_or_path(settings.model.name_or_path))
    lengths = [min(len(tokenizer(text)["input_ids"]), 6) for text, _ in train]
    assert record["mean_tokens"] == pytest.approx(np.mean(lengths))
    assert record["max_tokens"] == max(lengths) == 6
    assert record["at_max_length"] == pytest.approx(np.mean([length == 6 for length in lengths]))


def test_table12_prints_the_papers_sizes_beside_ours(tmp_path, capsys):
    out = tmp_path / "out"
    cells = [
        "experiment=table2 settings=roberta_base_cola debug=smoke",
        "experiment=table2 settings=roberta_base_rte debug=smoke",
    ]
    assert main(["datasets", *(f"--cell={cell}" for cell in cells), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # The SMOKE stand-in (the embedded reviews task, 96 rows: 80 train, 16 validation) for CoLA and RTE.
    assert "| CoLA | 80 (n=1) vs 8551 [-8471] | 16 (n=1) vs 1043 [-1027] |" in printed
    assert "| RTE | 80 (n=1) vs 2490 [-2410] | 16 (n=1) vs 277 [-261] |" in printed
    assert "| MNLI | — (n=0) vs 392702 |" in printed
    assert printed.startswith("## SMOKE")
    assert {path.name for path in out.iterdir()} >= {"table12.md", "table12.csv", "table12_data.csv"}


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("experiment=table99 settings=roberta_base_cola", "error: --cell: "),
        (
            "experiment=table2 settings=roberta_base_nope debug=smoke",
            "error: settings: the paper has no settings",
        ),
    ],
)
def test_a_cell_that_does_not_compose_or_validate_is_a_clear_error(tmp_path, capsys, cell, message):
    assert main(["datasets", "--cell", cell, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(message) and "Traceback" not in error


def save_tiny_bert(folder, query_rank: int) -> None:
    """A 2-layer BERT whose layer-0 query weight has rank ``query_rank``; every other weight generic."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24
    )
    model = BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(1)
    low = torch.randn(HIDDEN, query_rank, generator=generator) @ torch.randn(
        query_rank, HIDDEN, generator=generator
    )
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight.copy_(low)
    model.save_pretrained(folder)


def test_pretrained_rank_reads_every_adapted_matrix(tmp_path):
    save_tiny_bert(tmp_path / "bert", query_rank=10)
    settings = validate(
        compose_train(["model=hub", f"model.name_or_path={tmp_path / 'bert'}", "method.targets=[q,v]"])
    )
    records = pretrained_rank.pretrained_rank_records(settings)
    ranks = {record["matrix"]: record["rank"] for record in records}
    assert len(ranks) == 4 and set(ranks.values()) == {10, HIDDEN}
    assert ranks["bert.encoder.layer.0.attention.self.query"] == 10
    deficient = next(record for record in records if record["rank"] == 10)
    assert deficient["fraction"] == pytest.approx(10 / 16) and not deficient["full_rank"]
    summary, matrices = pretrained_rank.full_rank_tables(records, smoke=False)
    (row,) = summary.records
    assert (row["matrices"], row["below"], row["holds"]) == (4, 1, False)
    assert row["lowest_matrix"] == "bert.encoder.layer.0.attention.self.query"
    assert len(matrices.records) == 4


def test_pretrained_rank_reads_the_q_and_v_slices_of_gpt2s_fused_attention(tmp_path):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=HIDDEN, n_layer=1, n_head=2))
    c_attn = model.transformer.h[0].attn.c_attn  # Conv1D: weight (d_in, 3·d_out) = [q | k | v] columns
    with torch.no_grad():
        c_attn.weight[:, 2 * HIDDEN :] = 0.0  # v: rank 0
        c_attn.weight[:, 5] = 0.0  # one output of q: rank 15
    model.save_pretrained(tmp_path / "gpt2")
    settings = validate(
        compose_train(
            [
                "model=hub",
                f"model.name_or_path={tmp_path / 'gpt2'}",
                "task=restaurants",
                "method.targets=[q,v]",
            ]
        )
    )
    records = {record["matrix"]: record for record in pretrained_rank.pretrained_rank_records(settings)}
    assert set(records) == {"transformer.h.0.attn.c_attn[q]", "transformer.h.0.attn.c_attn[v]"}
    q = records["transformer.h.0.attn.c_attn[q]"]
    assert (q["rows"], q["columns"], q["rank"]) == (HIDDEN, HIDDEN, HIDDEN - 1)
    assert records["transformer.h.0.attn.c_attn[v]"]["rank"] == 0
    # The oracle: numpy's matrix_rank on the same (d_out, d_in) slice, at float32's tolerance.
    weight = c_attn.weight.detach().T[:HIDDEN].double().numpy()
    tolerance = np.linalg.svd(weight, compute_uv=False).max() * HIDDEN * np.finfo(np.float32).eps
    assert np.linalg.matrix_rank(weight, tol=tolerance) == q["rank"]


def test_bfloat16_weights_are_ranked_as_the_exact_values_they_store(tmp_path):
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(64, 256, generator=generator).to(torch.bfloat16)
    model = torch.nn.Sequential()
    model.add_module("q", torch.nn.Linear(256, 64, bias=False, dtype=torch.bfloat16))
    with torch.no_grad():
        model.q.weight.copy_(weight)
    ((name, matrix),) = pretrained_rank.adapted_matrices(model, ["q"])
    assert name == "q" and matrix.dtype == torch.bfloat16
    # bfloat16's eps (2⁻⁷) × max(m, n) = 2 × σ_max: numpy's default tolerance at that eps would call it rank 0.
    rank = pretrained_rank.numerical_rank(matrix.to(torch.float64), precision=pretrained_rank.RANK_PRECISION)
    assert rank == 64
