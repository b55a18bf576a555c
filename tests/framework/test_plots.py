"""The per-run loss curve: a title that tells the runs of a sweep apart, one legend, every point drawn."""

from __future__ import annotations

import matplotlib.pyplot as plt

from lorma_exp import plots
from lorma_exp.plots import curve_title, plot_loss_curve

PNG_MAGIC = b"\x89PNG"


def drawn_figure(monkeypatch, events, tmp_path):
    """Plot ``events`` and keep the figure plot_loss_curve closes, to read what it drew."""
    kept = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    path = plot_loss_curve(events, "accuracy", "title", tmp_path / "curve.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    (figure,) = kept
    return figure


def test_the_title_spells_the_method_settings_and_seed():
    identity = {
        "task": "cola",
        "model": "minilm",
        "method": "lorma_plus",
        "r": 8,
        "alpha": 16.0,
        "mode": "pre",
    }
    assert curve_title({**identity, "seed": 2}) == "cola · minilm · lorma_plus\nr=8  α=16.0  mode=pre  seed=2"
    full = {"task": "cola", "model": "minilm", "method": "full_ft", "r": None, "alpha": None, "mode": None}
    assert curve_title({**full, "seed": 1}).endswith("\nseed=1")


def test_a_run_with_one_point_of_each_still_draws_them_with_one_legend(monkeypatch, tmp_path):
    events = [
        {"event": "train", "step": 1, "loss": 0.7},
        {"event": "eval", "step": 1, "split": "validation", "accuracy": 0.5, "loss": 0.69},
        {"event": "eval", "step": 1, "split": "test", "accuracy": 0.4},
    ]
    figure = drawn_figure(monkeypatch, events, tmp_path)
    lines = [line for axis in figure.axes for line in axis.get_lines()]
    assert {line.get_label() for line in lines} == {"training loss", "validation loss", "validation accuracy"}
    assert all(len(line.get_xdata()) == 1 and line.get_marker() not in ("None", "", None) for line in lines)
    (legend,) = [axis.get_legend() for axis in figure.axes if axis.get_legend() is not None]
    assert [text.get_text() for text in legend.get_texts()] == [
        "training loss",
        "validation loss",
        "validation accuracy",
    ]
    plt.close(figure)
