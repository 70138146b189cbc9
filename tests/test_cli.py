import re

from dipflow.cli._main import main


def test_demo_runs_and_reports(capsys):
    code = main(
        [
            "demo",
            "--m",
            "4",
            "--n",
            "6",
            "--k",
            "8",
            "--d",
            "5",
            "--max-steps",
            "200",
            "--tol",
            "0.5",
            "--x64",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Theorem 1 certificate" in out and "(5) holds" in out
    assert re.search(
        r"gradient descent \(η = 1.0\): (converged|max_steps) after \d+ steps", out
    )
    assert re.search(
        r"gradient flow \(Tsit5, adaptive\): (converged|max_steps) at t = ", out
    )


def test_demo_bad_input_is_a_clear_error(capsys):
    code = main(["demo", "--k", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "`k` must be >= 1" in err
