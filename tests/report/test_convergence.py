"""Training-loss AUC vs LoRA and the first step reaching LoRA's minimum, on curves with closed-form answers."""

from __future__ import annotations

import numpy as np
import pytest

from lorma_exp.analysis import convergence
from lorma_exp.analysis.render import to_markdown
from lorma_exp.analysis.runs import RunDataError, collect_runs
from lorma_exp.analysis.tables import render
from lorma_exp.report import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_area_of_a_constant_loss_is_height_times_width():
    steps = np.arange(10, 1001, 10)
    assert convergence.area_between(steps, np.full(steps.shape, 2.0), 10, 1000) == pytest.approx(2.0 * 990)


def test_area_of_a_linear_loss_over_an_interval_between_logged_steps():
    # y = x on [0, 10]; the integral over [2.5, 7.5] is (7.5² − 2.5²) / 2 = 25, endpoints interpolated.
    steps = np.array([0.0, 4.0, 10.0])
    assert convergence.area_between(steps, steps.copy(), 2.5, 7.5) == pytest.approx(25.0)


def test_area_refuses_an_interval_outside_the_curve():
    with pytest.raises(ValueError, match="not inside"):
        convergence.area_between(np.array([10.0, 20.0]), np.array([1.0, 1.0]), 5.0, 20.0)


def test_auc_decrease_compares_over_the_steps_both_runs_logged():
    # LoRA: 2.0 everywhere, logged every 10 steps over [10, 1000].
    # Run: 2 − step/1000, logged every 25 steps over [25, 975]; common interval [25, 975].
    # Run area: 2·950 − (975² − 25²)/2000 = 1900 − 475 = 1425; LoRA area 1900; decrease 475/1900 = 25 %.
    lora_steps = np.arange(10, 1001, 10, dtype=float)
    run_steps = np.arange(25, 976, 25, dtype=float)
    decrease, area, reference_area, interval = convergence.auc_decrease_percent(
        run_steps, 2 - run_steps / 1000, lora_steps, np.full(lora_steps.shape, 2.0)
    )
    assert interval == (25.0, 975.0)
    assert area == pytest.approx(1425.0)
    assert reference_area == pytest.approx(1900.0)
    assert decrease == pytest.approx(25.0)


def test_first_step_reaching_a_threshold():
    steps = np.array([10, 20, 30, 40, 50])
    losses = np.array([3.0, 2.0, 1.5, 1.5, 1.0])
    assert convergence.first_step_reaching(steps, losses, 1.5) == 30
    assert convergence.first_step_reaching(steps, losses, 0.5) is None


def lora_curve():
    # Falls linearly from 3.0 at step 100 to its minimum 1.0 at step 400, then stays there.
    return [(100 * k, max(1.0, 3.0 - (100 * k - 100) / 150)) for k in range(1, 11)]


def fast_curve():
    # Reaches 1.0 at step 200 and 0.8 afterwards.
    return [(100, 3.0), (200, 1.0), *[(100 * k, 0.8) for k in range(3, 11)]]


def cola_run(make_run, name, method, seed, curve):
    return make_run(
        name,
        loss_curve=curve,
        table="table2",
        task="cola",
        model="roberta_base",
        method=method,
        seed=seed,
        metrics={"matthews": 0.6},
    )


def test_runs_are_compared_with_the_lora_run_of_their_seed(make_run, tmp_path):
    for seed in (1, 2):
        cola_run(make_run, f"lora{seed}", "lora", seed, lora_curve())
        cola_run(make_run, f"pi{seed}", "lorma_pi", seed, fast_curve())
    runs = collect_runs([tmp_path / "runs"]).finished
    pairs, notes = convergence.pair_with_reference(runs)
    assert notes == []
    assert sorted((run.seed, reference.seed) for run, reference in pairs) == [(1, 1), (2, 2)]
    comparison = convergence.compare(*pairs[0])
    # LoRA's minimum 1.0 is first logged at step 400; the run logs ≤ 1.0 first at step 200: 2× sooner.
    assert comparison.reference_min_loss == pytest.approx(1.0)
    assert comparison.reference_min_step == 400
    assert comparison.first_reach_step == 200
    assert comparison.speedup == pytest.approx(2.0)
    # Areas over [100, 1000] by trapezoids: LoRA 3.0→1.0 linearly to 400 (600), then 1.0 (600): 1200.
    # Run: 3.0→1.0 over [100, 200] (200), 1.0→0.8 over [200, 300] (90), 0.8 over [300, 1000] (560): 850.
    assert comparison.reference_auc == pytest.approx(1200.0)
    assert comparison.auc == pytest.approx(850.0)
    assert comparison.decrease_percent == pytest.approx(100 * 350 / 1200)


def test_auc_table_averages_seeds_beside_the_paper(make_run, tmp_path):
    for seed in (1, 2):
        cola_run(make_run, f"lora{seed}", "lora", seed, lora_curve())
        cola_run(make_run, f"pi{seed}", "lorma_pi", seed, fast_curve())
    runs = collect_runs([tmp_path / "runs"]).finished
    pairs, _ = convergence.pair_with_reference(runs)
    comparisons = [convergence.compare(run, reference) for run, reference in pairs]
    table = convergence.auc_table(comparisons)
    cell = table.cells[("lorma_pi", "cola")]
    assert (cell.n, cell.std, cell.paper) == (2, 0.0, 51.97)
    assert cell.mean == pytest.approx(100 * 350 / 1200)
    reach = convergence.first_reach_table(comparisons)
    assert reach.cells[("lorma_pi", "cola/step")].mean == 200
    assert reach.cells[("lorma_pi", "cola/step")].paper == 1460
    assert reach.cells[("lorma_pi", "cola/speedup")].mean == pytest.approx(2.0)


def test_tasks_the_paper_did_not_analyse_get_their_own_columns(make_run, tmp_path):
    for name, method in (("lora", "lora"), ("plus", "lorma_plus")):
        make_run(
            name,
            loss_curve=lora_curve() if method == "lora" else fast_curve(),
            table="table2",
            task="rte",
            model="roberta_base",
            method=method,
            seed=1,
            metrics={"accuracy": 0.7},
        )
    pairs, _ = convergence.pair_with_reference(collect_runs([tmp_path / "runs"]).finished)
    comparisons = [convergence.compare(run, reference) for run, reference in pairs]
    rendered = render(convergence.auc_table(comparisons))
    assert "RTE" in rendered.header
    assert "29.17 (n=1)" in to_markdown(rendered)  # 100 · 350 / 1200 = 29.1666...


def test_a_run_without_a_lora_partner_is_noted(make_run, tmp_path):
    cola_run(make_run, "pi", "lorma_pi", 1, fast_curve())
    pairs, notes = convergence.pair_with_reference(collect_runs([tmp_path / "runs"]).finished)
    assert pairs == []
    assert len(notes) == 1 and "No LoRA run" in notes[0]


def test_two_lora_runs_for_one_comparison_are_an_error(make_run, tmp_path):
    cola_run(make_run, "lora_a", "lora", 1, lora_curve())
    cola_run(make_run, "lora_b", "lora", 1, lora_curve())
    with pytest.raises(RunDataError, match="two LoRA runs"):
        convergence.pair_with_reference(collect_runs([tmp_path / "runs"]).finished)


def test_cli_writes_tables_and_loss_plot(make_run, tmp_path, capsys):
    cola_run(make_run, "lora", "lora", 1, lora_curve())
    cola_run(make_run, "plus", "lorma_plus", 1, fast_curve())
    out = tmp_path / "out"
    assert main(["convergence", "--runs", str(tmp_path / "runs"), "--out", str(out), "--task", "cola"]) == 0
    printed = capsys.readouterr().out
    assert "Table 5" in printed and "Figure 6" in printed
    for name in ("table5", "figure6", "convergence_runs"):
        assert {(out / f"{name}{suffix}").is_file() for suffix in (".md", ".csv", ".tex")} == {True}
    plots = sorted(out.glob("loss_*.png"))
    assert len(plots) == 1 and plots[0].read_bytes().startswith(PNG_MAGIC)


def test_a_curve_of_one_logged_point_is_refused_with_the_fix(make_run, tmp_path, capsys):
    # A SMOKE run of 2 steps that logs its loss every 10 steps logs once, at its last step.
    cola_run(make_run, "lora", "lora", 1, [(2, 0.7)])
    cola_run(make_run, "plus", "lorma_plus", 1, [(2, 0.6)])
    out = tmp_path / "out"
    assert main(["convergence", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "logged at 1 step(s) (2)" in error and "trainer.log_every=1" in error
    assert "Traceback" not in error


def test_curves_without_a_common_interval_name_both_runs(make_run, tmp_path):
    cola_run(make_run, "lora", "lora", 1, [(1, 0.9), (2, 0.8)])
    cola_run(make_run, "plus", "lorma_plus", 1, [(5, 0.7), (6, 0.6)])
    pairs, _ = convergence.pair_with_reference(collect_runs([tmp_path / "runs"]).finished)
    with pytest.raises(RunDataError, match=r"plus against .*lora: the curves share no step interval"):
        convergence.compare(*pairs[0])


def test_two_logged_steps_are_enough_to_compare(make_run, tmp_path):
    cola_run(make_run, "lora", "lora", 1, [(1, 1.0), (2, 0.8)])
    cola_run(make_run, "plus", "lorma_plus", 1, [(1, 1.0), (2, 0.4)])
    pairs, _ = convergence.pair_with_reference(collect_runs([tmp_path / "runs"]).finished)
    comparison = convergence.compare(*pairs[0])
    # Trapezoids over [1, 2]: LoRA (1.0 + 0.8)/2 = 0.9, the run (1.0 + 0.4)/2 = 0.7; 100·0.2/0.9 % lower.
    assert comparison.decrease_percent == pytest.approx(100 * 0.2 / 0.9)
    assert comparison.first_reach_step == 2
