"""`dipflow image`: one operator on one image (or several, side by side), a
convolutional generator, the theory along training; written as
`summary.json`, `trajectory.csv` and `figure.png`."""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from .._core._checks import positive_int
from ..generators._convdecoder import ConvDecoder
from ..generators._networks import default_trainable_filter
from ..generators._skipnet import SkipNet
from ..problems._losses import AbstractLoss, loss_name, parse_loss
from ..problems._noise import GaussianNoise, check_noise, noise_name, parse_noise
from ..problems._operators import image_operator
from ..problems._problems import InverseProblem
from ._image_fit import fit_image
from ._images import load_image

# fit_image's keywords and their defaults: `run_image` passes them through.
_FIT_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(fit_image).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


def _convdecoder(key, image_shape, *, channels, layers, activation):
    return ConvDecoder.init(
        key, image_shape, channels=channels, layers=layers, activation=activation
    )


def _skipnet(key, image_shape, *, channels, layers, activation):
    channels = positive_int("channels", channels)
    levels = positive_int("layers", layers)
    return SkipNet.init(
        key, image_shape, channels=(channels,) * levels, activation=activation
    )


# The generators by the names users type: how each is built (its default
# activation below).
GENERATORS = {"convdecoder": _convdecoder, "skipnet": _skipnet}
DEFAULT_ACTIVATION = {"convdecoder": "relu", "skipnet": "leaky_relu"}

# Each task's options and their defaults (`None`: the operator's own default;
# `m` of compressed sensing defaults to a quarter of the pixels).
TASK_OPTIONS = {
    "denoise": {},
    "inpaint": {"missing": 0.5},
    "deblur": {"sigma": 1.0},
    "super_resolution": {"factor": 2, "sigma": None},
    "compressed_sensing": {"m": None, "kind": "structured"},
    "fourier": {"fraction": 0.3},
}
_RANDOM_TASKS = ("inpaint", "compressed_sensing", "fourier")
# Task options whose default depends on the image.
_IMAGE_DEFAULTS = {"compressed_sensing": {"m": lambda truth: max(truth.size // 4, 1)}}


def image_problem(truth, task, *, noise=0.0, key, loss=None, **options):
    """The [`dipflow.InverseProblem`][] of `task` on the image `truth` (C, H, W):
    the operator of [`dipflow.image_operator`][] (random parts drawn from
    `key`) with the options of `TASK_OPTIONS` (an option of another task is an
    error; `None` takes the default), `y` drawn by the noise model `noise` (a
    number: iid Gaussian noise of that standard deviation; Poisson counts at a
    peak scale the operator, see [`dipflow.InverseProblem.observed`][]), and
    the loss `loss` (default squared error)."""
    if task not in TASK_OPTIONS:
        raise ValueError(f"`task` must be one of {list(TASK_OPTIONS)}, got {task!r}.")
    model = check_noise(noise)
    foreign = sorted(
        k for k, v in options.items() if v is not None and k not in TASK_OPTIONS[task]
    )
    if foreign:
        raise ValueError(
            f"task {task!r} takes the options {sorted(TASK_OPTIONS[task]) or 'none'}; "
            f"got {foreign}."
        )
    wanted = dict(TASK_OPTIONS[task])
    wanted.update({k: v for k, v in options.items() if v is not None})
    for option, default in _IMAGE_DEFAULTS.get(task, {}).items():
        if wanted[option] is None:
            wanted[option] = default(truth)
    wanted = {k: v for k, v in wanted.items() if v is not None}
    k_op, k_noise = jax.random.split(key)
    if task in _RANDOM_TASKS:
        wanted["key"] = k_op
    op = image_operator(task, tuple(truth.shape), dtype=truth.dtype, **wanted)
    if model.level == 0:  # noise-free: no ε at all (the time (6) is undefined)
        return InverseProblem(A=op, x_true=truth.reshape(-1), loss=loss)
    return InverseProblem.observed(op, truth.reshape(-1), model, key=k_noise, loss=loss)


def make_generator(name, key, image_shape, *, channels, layers, activation=None):
    """The generator `name` for `image_shape`: a [`dipflow.ConvDecoder`][] of
    `layers` blocks of `channels`, or a [`dipflow.SkipNet`][] of `layers`
    levels of `channels` (skip connections of 4 channels, as in the DIP code)."""
    if name not in GENERATORS:
        raise ValueError(
            f"`generator` must be one of {list(GENERATORS)}, got {name!r}."
        )
    activation = DEFAULT_ACTIVATION[name] if activation is None else activation
    return GENERATORS[name](
        key, image_shape, channels=channels, layers=layers, activation=activation
    )


def run_image(
    out,
    *,
    image="camera",
    size=64,
    color=False,
    task="inpaint",
    noise=0.0,
    loss="squared",
    generator="convdecoder",
    channels=64,
    layers=4,
    activation=None,
    seed=0,
    seeds=1,
    **options,
) -> dict:
    """Run `dipflow image` into the folder `out`; returns the summary.

    `image` is one image name (or file), or a list of them: every image is
    observed through the same operator draw and noise (from `seed`) and fitted
    by the same `seeds` initialisations, all in one `fit_image` call, so that
    an image's runs are the same alone or beside others. `options` are
    [`dipflow.fit_image`][]'s keywords (`optimizer`, `lr`, `iters`, …, with
    its defaults) and the task's options (`missing`, `sigma`, `factor`, `m`,
    `kind`, `fraction`: see `TASK_OPTIONS`); `loss` is the loss trained on, by name
    (`"squared"`, `"pseudo_huber:DELTA"`, `"poisson:B"`). Everything is checked (image names, task
    and its options, generator sizes, trainer) before anything compiles.
    See the [Images](../images.md) guide.
    """
    seeds = positive_int("seeds", seeds)
    settings = _FIT_DEFAULTS | {k: v for k, v in options.items() if k in _FIT_DEFAULTS}
    task_options = {k: v for k, v in options.items() if k not in _FIT_DEFAULTS}
    loss_fn = loss if isinstance(loss, AbstractLoss) else parse_loss(loss)
    model = parse_noise(noise) if isinstance(noise, str) else check_noise(noise)
    noise_label = _noise_label(model)
    names = image_names(image)
    activation = DEFAULT_ACTIVATION.get(generator) if activation is None else activation
    truths = [load_image(name, size, color=color) for name in names]
    shape = tuple(truths[0].shape)
    key = jax.random.PRNGKey(seed)
    k_problem, k_nets = jax.random.split(key)
    problems = [
        image_problem(t, task, noise=model, key=k_problem, loss=loss_fn, **task_options)
        for t in truths
    ]
    nets = [
        make_generator(
            generator, k, shape, channels=channels, layers=layers,
            activation=activation,
        )
        for k in jax.random.split(k_nets, seeds)
    ]  # fmt: skip
    # Runs image-major: image i, seed j is run i·seeds + j.
    runs = [(i, j) for i in range(len(names)) for j in range(seeds)]
    several = len(names) > 1
    fit = fit_image(
        [nets[j] for _, j in runs],
        [problems[i] for i, _ in runs] if several else problems[0],
        [truths[i] for i, _ in runs] if several else truths[0],
        **settings,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [image_label(names[i]) for i, _ in runs]
    trajectory = fit.trajectory.copy()
    run_of = trajectory.pop("seed").to_numpy()
    trajectory.insert(0, "image", [labels[r] for r in run_of])
    trajectory.insert(1, "seed", [runs[r][1] for r in run_of])
    trajectory.to_csv(out / "trajectory.csv", index=False)
    header = [f"{lab}/seed{j}" if several else f"seed{j}"
              for lab, (_, j) in zip(labels, runs, strict=True)]  # fmt: skip
    np.savetxt(out / "psnr_curve.csv", fit.psnr_curve.T, delimiter=",",
               header=",".join(header), comments="")  # fmt: skip
    everything = range(len(runs))
    summary = {
        "image": names if several else names[0],
        "size": list(shape),
        "task": task,
        "task_options": {k: v for k, v in task_options.items() if v is not None},
        "noise": noise_label,
        "loss": loss_name(loss_fn),
        "m": problems[0].m,
        "n": problems[0].n,
        "generator": generator,
        "channels": channels,
        "layers": layers,
        "activation": activation,
        "parameters": _trained_parameters(nets[0]),
        "optimizer": settings["optimizer"],
        "lr": settings["lr"],
        "iters": settings["iters"],
        "seeds": seeds,
        **_results(fit, everything),
        "sec_per_iter": fit.sec_per_iter,
        "sigma_A": float(fit.sigma_A[0]),
        "sigma_min_J0": [float(s) for s in fit.sigma_min_J0],
        "sigma_min_J0_converged": [bool(c) for c in fit.sigma_min_J0_converged],
        "noise_norm": _mean(fit.noise_norm),
        "certificate": _certificate_summary(fit.certificate),
        "per_seed": [
            {"image": labels[r], "seed": j, "final_psnr": float(fit.final_psnr[r]),
             "best_psnr": float(fit.best_psnr[r]), "stops": fit.stops[r]}
            for r, (_, j) in enumerate(runs)
        ],
    }  # fmt: skip
    if several:
        summary["per_image"] = {
            image_label(name): _results(
                fit, [r for r, (k, _) in enumerate(runs) if k == i]
            )
            for i, name in enumerate(names)
        }
    # Strict JSON: an undefined number (the PSNR at a stop beyond the run) is null.
    text = json.dumps(_nan_to_none(summary), indent=2, default=_plain, allow_nan=False)
    (out / "summary.json").write_text(text)
    for i, name in enumerate(names):
        first = i * seeds  # the image's first seed
        title = _title(summary, image_label(name))
        paths = ["figure.png"] if i == 0 else []
        paths += [f"figure-{image_label(name)}.png"] if several else []
        for path in paths:
            plot_image_fit(fit, truths[i], problems[i], out / path, title=title,
                           seed=first)  # fmt: skip
    return summary


def image_names(image) -> list[str]:
    """`image` (a name or file, or a list of them) as a non-empty list whose
    labels (a file's stem) are distinct."""
    names = [image] if isinstance(image, str | os.PathLike) else list(image)
    if not names:
        raise ValueError("`image` must name at least one image.")
    names = [os.fspath(n) if isinstance(n, os.PathLike) else n for n in names]
    labels = [image_label(n) for n in names if isinstance(n, str)]
    if len(labels) != len(names):
        raise TypeError(f"`image` must be image names or file paths, got {image!r}.")
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        raise ValueError(f"`image` names {twice} more than once.")
    return names


def image_label(name: str) -> str:
    """A test image's name, or an image file's stem."""
    return Path(name).stem


def _results(fit, runs) -> dict:
    """Final and best PSNR and each stopping rule, as means over `runs`."""
    stops = [fit.stops[r] for r in runs]
    return {
        "final_psnr": _mean(fit.final_psnr[list(runs)]),
        "best_psnr": _mean(fit.best_psnr[list(runs)]),
        "stops": {
            rule: {
                key: _mean([s[rule][key] for s in stops])
                for key in ("iteration", "psnr", "ssim")
            }
            | {"reached": all(s[rule]["reached"] for s in stops)}
            for rule in (rule.name for rule in fit.rules)
        },
    }


def _noise_label(model):
    """A number for Gaussian noise (as it always was), else the model's name
    (its repr for a model of one's own)."""
    if type(model) is GaussianNoise:
        return model.sigma
    try:
        return noise_name(model)
    except ValueError:
        return repr(model)


def _certificate_summary(certificate) -> dict:
    """The loss's certificate quantities per run (NaN → null in the JSON)."""
    fields = ("pl_constant", "effective_residual", "noise_footprint", "R_prime", "rate")
    out = {f: [float(v) for v in getattr(certificate, f)] for f in fields}
    return out | {"undecided": list(certificate.undecided)}


def _trained_parameters(net) -> int:
    trained = eqx.filter(net, default_trainable_filter(net))
    return int(sum(a.size for a in jax.tree_util.tree_leaves(trained)))


def _mean(values):
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nan_to_none(v):
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_nan_to_none(x) for x in v]
    v = _plain(v) if hasattr(v, "item") else v
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _plain(v):
    return v.item() if hasattr(v, "item") else str(v)


def _title(s, image) -> str:
    return (
        f"{image} {s['size'][1]}×{s['size'][2]}, {s['task']}, noise {s['noise']}, "
        f"loss {s['loss']}; "
        f"{s['generator']} ({s['channels']} ch, {s['layers']} layers, {s['activation']}), "
        f"{s['optimizer']} lr {s['lr']}"
    )


# The stopping rules' marks on the PSNR curve, by name.
_STOP_STYLES = {"oracle": "g--", "wmv": "r:", "theory": "k-."}


def _observation_image(problem, shape):
    """What a person would look at: Aᵀ y shown as an image."""
    return np.asarray(problem.adjoint(problem.y)).reshape(shape)


def plot_image_fit(fit, truth, problem, path, *, title="", seed=0):
    """Run `seed` of `fit` (its index among the fit's networks), on the image
    `truth` observed through `problem`: truth, observation (Aᵀ y), the
    reconstruction at each stopping rule and the final one, above the curves
    (PSNR, loss and ‖y(t) − ȳ‖, σ_min(J))."""
    from matplotlib.figure import Figure

    shape = tuple(truth.shape)
    stops = fit.stops[seed]
    panels = [
        ("truth", np.asarray(truth)),
        ("observation Aᵀy", _observation_image(problem, shape)),
    ]
    for rule in fit.rules:
        panels.append((rule.caption(stops[rule.name]), fit.images[seed][rule.name]))
    panels.append((f"final: {fit.final_psnr[seed]:.2f} dB", fit.images[seed]["final"]))
    fig = Figure(figsize=(3 * len(panels), 6.8), layout="constrained")
    grid = fig.add_gridspec(2, len(panels), height_ratios=(1, 1))
    for i, (label, img) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        if img is not None:
            show = np.clip(np.moveaxis(img, 0, -1), 0, 1)
            ax.imshow(
                show[..., 0] if show.shape[-1] == 1 else show,
                cmap="gray",
                vmin=0,
                vmax=1,
            )
        else:  # a stop beyond the run: say so where its image would be
            ax.text(0.5, 0.5, label.replace(", ", "\n"), ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)  # fmt: skip
            label = ""
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    third = max(len(panels) // 3, 1)
    traj = fit.trajectory[fit.trajectory.seed == seed]
    ax = fig.add_subplot(grid[1, :third])
    ax.plot(fit.psnr_curve[seed])
    for rule, style in _STOP_STYLES.items():
        at = stops[rule]["iteration"]
        if math.isfinite(at) and at < len(fit.psnr_curve[seed]):  # within the run
            ax.axvline(at, color=style[0], ls=style[1:], label=rule)
    ax.set_xlabel("iteration")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, third : 2 * third])
    ax.semilogy(traj.iteration, traj.residual, label="‖A g − y‖")
    ax.semilogy(traj.iteration, traj.prediction_error, label="‖A g − ȳ‖")
    if fit.noise_norm[seed] > 0:
        ax.axhline(fit.noise_norm[seed], color="0.5", ls=":", label="‖ε‖")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, 2 * third :])
    sig = traj.dropna(subset=["sigma_min"])
    line = ax.plot(sig.iteration, sig.sigma_min, "-", label="σ_min(J(θ_t)) (Lanczos)")
    if len(sig) and (sig.sigma_min > 0).all():  # it spans decades along training
        ax.set_yscale("log")
    ok = sig.sigma_min_converged.astype(bool).to_numpy()
    color = line[0].get_color()
    ax.plot(sig.iteration[ok], sig.sigma_min[ok], "o", color=color)
    if not ok.all():  # an unconverged Lanczos estimate is too large: say so
        ax.plot(sig.iteration[~ok], sig.sigma_min[~ok], "o", mfc="none", color=color,
                label="not converged (an upper bound)")  # fmt: skip
    ax.set_xlabel("iteration")
    ax.set_ylabel("σ_min(J)")
    twin = ax.twinx()
    twin.plot(traj.iteration, traj.distance, color="0.6", label="‖θ − θ0‖")
    twin.set_ylabel("‖θ − θ0‖", color="0.4")
    handles = ax.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)
    return path
