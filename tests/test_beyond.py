"""`dipflow reproduce beyond`: the variants' studies, and the report of a tiny run."""

import pandas as pd
import pytest

import dipflow as dip
from dipflow.cli._main import main
from dipflow.studies._beyond import VARIANT_NAMES, VARIANTS, beyond_studies, variant_of


def test_every_variant_has_both_panels_and_maps_back():
    studies = beyond_studies(quick=True)
    assert set(studies) == {"reduced", "full"}
    assert studies["reduced"].runs == 20 and studies["full"].runs == 10
    for part, study in studies.items():
        for cell in study.cells:
            variant = next(v for v in VARIANTS if v.name == variant_of(cell.params()))
            assert variant.full_path == (part == "full")
            for key, value in variant.cell.items():
                expected = "W,V" if key == "train" else value
                assert getattr(cell, key) == expected
    names = {variant_of(c.params()) for s in studies.values() for c in s.cells}
    assert names == set(VARIANT_NAMES)
    for name in VARIANT_NAMES:
        cells = [
            c
            for s in studies.values()
            for c in s.cells
            if variant_of(c.params()) == name
        ]
        assert {c.panel for c in cells} == {"a", "b"}
        assert {c.m for c in cells if c.panel == "a"} == {10}
        assert {c.n for c in cells if c.panel == "b"} == {60}
    # The full-network variants run a smaller grid and budget.
    full = [c for c in studies["full"].cells]
    assert max(c.k for c in full) < max(c.k for c in studies["reduced"].cells)
    assert max(c.max_steps for c in full) < 25_000


def test_bad_variants():
    with pytest.raises(ValueError, match="`variants`"):
        beyond_studies(["paper_gd", "cnn"])
    with pytest.raises(ValueError, match="`variants`"):
        beyond_studies([])
    assert set(beyond_studies(["adam"])) == {"full"}


def test_cli_beyond_writes_the_report(tmp_path):
    out = tmp_path / "beyond"
    command = [
        "reproduce",
        "beyond",
        "--quick",
        "--variants",
        "paper_gd,mlp_depth2",
        "--runs",
        "2",
        "--max-steps",
        "40",
        "--out",
        str(out),
        "--no-progress",
        "--workers",
        "1",
    ]
    assert main(command) == 0
    table = pd.read_csv(out / "summary.csv")
    assert set(table["variant"]) == {"paper_gd", "mlp_depth2"}
    assert len(table) == 18 + 8  # 3 × 3 and 2 × 2 grids, two panels each
    assert (table.loc[table.variant == "mlp_depth2", "runs"] == 10).all()
    exponents = pd.read_csv(out / "exponents.csv")
    assert list(exponents["variant"]) == ["paper_gd", "mlp_depth2"]
    report = (out / "report.md").read_text()
    assert "MLP depth 2, GD" in report and "coarser grid" in report
    for name in ("paper_gd", "mlp_depth2"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    assert (out / "exponents.png").stat().st_size > 0
    # The stored runs are the studies' own; the same command resumes them.
    assert main(command) == 0
    assert len(dip.load(out / "reduced")) == 18 * 2
    assert len(dip.load(out / "full")) == 8 * 10
