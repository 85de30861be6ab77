"""The pivot grid over swept settings, on the real golden sweep."""

from __future__ import annotations

import pytest
from golden_runs import runs

from llmbench.errors import UserError
from llmbench.judge.report.pivot import build_pivot, cell_lines
from llmbench.judge.runs import load_runs

SWEEP = runs("sweep")[0]


@pytest.fixture(scope="module")
def frame():
    return load_runs([SWEEP])


def test_default_axes_rows_model_columns_zero_stage(frame):
    pivot = build_pivot(frame)
    assert pivot.col_keys == ("deepspeed.zero_stage",)
    assert pivot.row_keys == ("model.size", "parallel.world_size", "parallel.tp")
    assert pivot.cols == [(0,), (2,)]
    assert pivot.rows[:2] == [("tiny", 1, 1), ("mini", 1, 1)]
    assert len(pivot.cells) == 6


def test_best_cell_and_speedups(frame):
    pivot = build_pivot(frame)
    ok = frame[frame["status"] == "ok"]
    best = [c for c in pivot.cells.values() if c.best]
    assert len(best) == 1 and best[0].tokens_per_s == ok["tokens_per_s"].max()
    ref = pivot.reference
    assert ref.label == ok.iloc[0]["label"] and ref.speedup == pytest.approx(1.0)
    for cell in pivot.cells.values():
        if cell.tokens_per_s is not None:
            assert cell.speedup == pytest.approx(cell.tokens_per_s / ref.tokens_per_s)


def test_failed_cells_show_their_status(frame):
    pivot = build_pivot(frame)
    assert cell_lines(pivot.cell(("tiny", 4, 1), (0,))) == ["skipped"]
    assert cell_lines(pivot.cell(("tiny", 2, 2), (0,))) == ["unsupported"]
    assert cell_lines(pivot.cell(("tiny", 2, 2), (2,))) == ["–"]
    assert "tok/s" in cell_lines(pivot.cell(("tiny", 1, 1), (0,)))[0]


def test_chosen_axes_and_reference(frame):
    pivot = build_pivot(frame, rows=["deepspeed.zero_stage"], cols=["model.size"])
    assert pivot.col_keys == ("model.size",)
    assert pivot.row_keys[0] == "deepspeed.zero_stage"
    mini = next(c for c in pivot.cells.values() if c.label.startswith("gpt2-mini z2"))
    by_label = build_pivot(frame, reference=mini.label)
    assert by_label.reference.case_id == mini.case_id
    with pytest.raises(UserError, match=r"deepspeed\.zero_stag: not a setting"):
        build_pivot(frame, cols=["deepspeed.zero_stag"])
    with pytest.raises(UserError, match="no case with this id or label"):
        build_pivot(frame, reference="gpt3")


def test_several_runs_become_a_dimension():
    frame = load_runs(runs("nightly")[:2])
    pivot = build_pivot(frame)
    assert "run_id" in pivot.row_keys + pivot.col_keys
    assert len(pivot.cells) == 4


def test_a_setting_unset_in_some_cases_is_a_dash_not_none_or_nan():
    """``model.config`` is set in some cases of a sweep and unset (None) in others."""
    from rich.console import Console

    from llmbench.judge.report.console import comparison_table
    from llmbench.judge.result import CaseResult
    from llmbench.judge.runs import results_frame

    results = [
        CaseResult(
            case_id=f"c{i}",
            label=f"l{i}",
            params={"model.config": config, "model.family": "llama"},
            status="ok",
            metrics={"tokens_per_s": 10.0, "step_time_s_median": 0.1},
        )
        for i, config in enumerate((None, "configs/gqa"))
    ]
    console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(comparison_table(results_frame(results)))
    text = console.export_text()
    assert "configs/gqa" in text and "–" in text
    assert "None" not in text and "nan" not in text


def test_a_terminal_cases_table_builds_only_the_rows_it_shows_and_counts_the_rest(frame):
    from rich.console import Console

    from llmbench.judge.report.console import text_table
    from llmbench.judge.report.tables import cases_table

    whole, cut = cases_table(frame), cases_table(frame, max_rows=2)
    assert cut.rows == whole.rows[:2] and cut.total == whole.total == len(whole.rows) > 2
    console = Console(width=200, record=True)
    console.print(text_table(cut, max_rows=2))
    assert f"{len(whole.rows) - 2} more rows" in console.export_text()
