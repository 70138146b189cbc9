"""`import dipflow` stays light: the dataframe, plotting and cluster libraries
load only when a function that needs them runs."""

import subprocess
import sys

HEAVY = ("pandas", "matplotlib", "dask")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_dipflow_imports_no_heavy_library():
    loaded = _modules_after("import dipflow")
    assert "dipflow" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_verify_loads_on_first_use():
    loaded = _modules_after("import dipflow; dipflow.verify.lemma2")
    assert "dipflow.verify" in loaded and "pandas" in loaded
