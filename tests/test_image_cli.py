"""`dipflow image`: the problem a task builds, the files a run writes, and bad
input refused before anything trains."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import dipflow as dip
from dipflow.cli._main import main
from dipflow.imaging import _image_experiment
from dipflow.imaging._image_experiment import image_problem

TRUTH = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 8, 8)))


def test_image_problem_takes_the_task_defaults():
    key = jax.random.PRNGKey(0)
    inpaint = image_problem(TRUTH, "inpaint", key=key)
    assert inpaint.m == 64 - 32  # half the pixels removed by default
    np.testing.assert_allclose(inpaint.y, inpaint.forward(TRUTH.reshape(-1)))
    assert inpaint.noise is None
    cs = image_problem(TRUTH, "compressed_sensing", key=key, noise=0.1)
    assert cs.m == 16  # a quarter of the pixels
    assert cs.noise.shape == (16,) and float(jnp.std(cs.noise)) > 0
    np.testing.assert_allclose(
        cs.y - cs.noise, cs.forward(TRUTH.reshape(-1)), atol=1e-12
    )
    sr = image_problem(TRUTH, "super_resolution", key=key, factor=4)
    assert sr.m == 4


@pytest.mark.parametrize(
    "task, options, match",
    [
        ("denoise", dict(missing=0.3), "takes the options"),
        ("tomography", {}, "`task`"),
        ("inpaint", dict(missing=1.0), "missing"),
    ],
)
def test_image_problem_bad_options(task, options, match):
    with pytest.raises(ValueError, match=match):
        image_problem(TRUTH, task, key=jax.random.PRNGKey(0), **options)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--image", "no_such_image"], "no_such_image"),
        (["--task", "inpaint", "--missing", "1.5"], "missing"),
        (["--task", "denoise", "--missing", "0.5"], "takes the options"),
        (["--size", "0"], "size"),
        (["--seeds", "0"], "seeds"),
        (["--channels", "0"], "channels"),
        (["--layers", "1"], "layers"),
        (["--generator", "skipnet", "--size", "8", "--layers", "4"], "divisible"),
        (["--loss", "huber"], "loss"),
        (["--loss", "pseudo_huber:-1"], "delta"),
        (["--loss", "poisson:1", "--noise", "0.1"], "counts"),
    ],
)
def test_bad_input_fails_before_training(argv, match, monkeypatch, capsys, tmp_path):
    def never(*args, **kwargs):
        raise AssertionError("training started on bad input")

    monkeypatch.setattr(_image_experiment, "fit_image", never)
    code = main(["image", "--out", str(tmp_path / "x"), *argv])
    assert code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_run_writes_summary_trajectory_and_figure(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["image", "--size", "8", "--task", "inpaint", "--missing", "0.25",
         "--noise", "0.05", "--channels", "4", "--layers", "2", "--iters", "30",
         "--record-every", "10", "--seeds", "2", "--lr", "0.02", "--x64",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0

    def no_nan(name):
        raise AssertionError(f"summary.json is not strict JSON: {name}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=no_nan)
    for key in ("final_psnr", "best_psnr", "sec_per_iter"):
        assert np.isfinite(summary[key])
    assert set(summary["stops"]) == {"theory", "oracle", "wmv"}
    assert summary["best_psnr"] >= summary["final_psnr"] - 1e-9
    assert summary["m"] == 64 - 16 and summary["seeds"] == 2
    oracle = [s["stops"]["oracle"] for s in summary["per_seed"]]
    assert summary["stops"]["oracle"]["psnr"] == pytest.approx(
        np.mean([o["psnr"] for o in oracle])
    )
    traj = pd.read_csv(out / "trajectory.csv")
    assert set(traj.seed) == {0, 1} and sorted(set(traj.iteration)) == [0, 10, 20, 30]
    assert traj.dropna(subset=["sigma_min"]).iteration.tolist() == [0, 0, 30, 30]
    curve = np.loadtxt(out / "psnr_curve.csv", delimiter=",", skiprows=1)
    assert curve.shape == (31, 2)
    np.testing.assert_allclose(curve.max(axis=0).mean(), summary["best_psnr"])
    assert (out / "figure.png").stat().st_size > 10_000
    assert "final PSNR" in capsys.readouterr().out


def test_several_images_run_side_by_side(tmp_path, capsys):
    """Two images in one run: each image's runs are what a run of that image
    alone gives (same operator draw, noise and initialisations)."""
    argv = ["image", "--size", "8", "--channels", "4", "--layers", "2", "--iters", "20",
            "--record-every", "10", "--noise", "0.05", "--seeds", "2", "--x64",
            "--no-progress"]  # fmt: skip
    assert (
        main([*argv, "--image", "camera", "astronaut", "--out", str(tmp_path / "b")])
        == 0
    )
    assert main([*argv, "--image", "astronaut", "--out", str(tmp_path / "a")]) == 0
    both = json.loads((tmp_path / "b" / "summary.json").read_text())
    alone = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert both["image"] == ["camera", "astronaut"] and alone["image"] == "astronaut"
    assert [(s["image"], s["seed"]) for s in both["per_seed"]] == [
        ("camera", 0),
        ("camera", 1),
        ("astronaut", 0),
        ("astronaut", 1),
    ]
    assert set(both["per_image"]) == {"camera", "astronaut"}
    for key in ("final_psnr", "best_psnr"):
        assert both["per_image"]["astronaut"][key] == pytest.approx(
            alone[key], rel=1e-10
        )
    curves = pd.read_csv(tmp_path / "b" / "psnr_curve.csv")
    assert list(curves.columns) == [
        "camera/seed0",
        "camera/seed1",
        "astronaut/seed0",
        "astronaut/seed1",
    ]
    one = pd.read_csv(tmp_path / "a" / "psnr_curve.csv")
    np.testing.assert_allclose(curves["astronaut/seed1"], one["seed1"], rtol=1e-10)
    traj = pd.read_csv(tmp_path / "b" / "trajectory.csv")
    assert set(zip(traj.image, traj.seed, strict=True)) == {
        ("camera", 0),
        ("camera", 1),
        ("astronaut", 0),
        ("astronaut", 1),
    }
    for name in ("figure.png", "figure-camera.png", "figure-astronaut.png"):
        assert (tmp_path / "b" / name).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "camera: final PSNR" in printed and "astronaut: final PSNR" in printed


def test_an_image_named_twice_is_refused(tmp_path, capsys):
    code = main(["image", "--image", "camera", "camera", "--out", str(tmp_path / "x")])
    assert code == 2 and "more than once" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_image_names_are_known():
    assert "camera" in dip.available_images()
