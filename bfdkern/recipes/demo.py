"""The embedded demo: the whole method on this machine's CPU with no data and no network.

1. The camera simulator (:mod:`bfdkern.data.simulator`) writes a small collection of face photos as real
   JPEGs with EXIF (every tag leaves a physical trace), plus held-out photos and faces that skipped the
   camera pipeline (:func:`~bfdkern.data.simulator.simulate_uncamera`, the stand-in for generated faces).
2. A small encoder is pretrained on the camera photos with bi-level lambda (the same run loop as
   ``bfdkern pretrain``), with a learning rate suited to the small model (the paper's 1e-5 is for
   ResNet-50 on a large collection) and a faster lambda learning rate so lambda visibly moves in a few
   hundred steps.
3. The pretext tasks are checked on held-out photos: each task's loss before and after pretraining
   against its chance level (the best constant prediction on the same targets).
4. The one-class detector (a Gaussian mixture) is fitted on features of held-out real photos and scored on
   other real photos and on the camera-less faces, all preprocessed identically (JPEG re-encoding at one
   quality); AUC and AP are reported, next to those of the same encoder at random initialisation.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from bfdkern.data import FaceDataset
from bfdkern.data.simulator import simulate_collection, simulate_uncamera
from bfdkern.detect import (
    BinaryDetector,
    FitWarning,
    OneClassDetector,
    Preprocessing,
    average_precision,
    extract_features,
    roc_auc,
)
from bfdkern.detect.evaluation import labelled
from bfdkern.detect.plots import plot_histograms, plot_roc
from bfdkern.ops import multitask_loss
from bfdkern.recipes.demo_settings import DemoSettings
from bfdkern.tasks import TaskSpec
from bfdkern.training import BatchStream, Pretraining, chance_losses, read_log
from bfdkern.training.chance import LEARNED_MARGIN, is_learned

if TYPE_CHECKING:
    from bfdkern.training.run import PretrainResult

MARKER = "demo.json"
"""Written into the demo folder; a folder holding it may be cleared by the next demo run."""
DEMO_ITEMS = ("photos", "run", "plots", MARKER)


@dataclass
class DemoResult:
    """What the demo measured (numbers are plain floats; paths point into the demo folder)."""

    out_dir: Path
    settings: DemoSettings
    auc: float
    ap: float
    auc_random_init: float
    binary_auc: float
    binary_auc_random_init: float
    tasks: list[str]
    outer_tasks: list[str]
    loss_before: list[float]
    loss_after: list[float]
    chance: list[float]
    lambda_before: list[float]
    lambda_after: list[float]
    steps: int
    step_rate: float
    loader_rate: float
    data_wait_fraction: float
    data_wait_median: float
    step_median: float
    seconds: dict[str, float] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)

    @property
    def learned(self) -> list[bool]:
        """Per task: held-out loss after pretraining clearly below the chance level
        (:func:`bfdkern.training.chance.is_learned`)."""
        return [is_learned(a, c) for a, c in zip(self.loss_after, self.chance)]


def prepare_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` or clear a previous demo there; refuse a non-empty folder that is not a demo's."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(f"{out}: folder is not empty and holds no earlier demo ({MARKER}); choose another --out")
        for name in DEMO_ITEMS:
            item = out / name
            if item.is_dir():
                shutil.rmtree(item)
            elif item.exists():
                item.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")
    return out


def _eval_batches(paths, spec: TaskSpec, settings: DemoSettings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed held-out pretext samples (manipulations drawn as in training, keyed by the seed), in batches."""
    ds = FaceDataset([str(p) for p in paths], spec, size=settings.image_size, seed=settings.seed + 1000)
    n = min(settings.eval_samples, 4 * len(ds))
    samples = [ds.draw((i % len(ds), 0, i // len(ds))) for i in range(n)]
    b = settings.batch_size
    return [
        (torch.stack([s.image for s in samples[i : i + b]]), torch.stack([s.targets for s in samples[i : i + b]]))
        for i in range(0, n - b + 1, b)
    ]


def heldout_losses(model, batches, spec: TaskSpec) -> list[float]:
    """Mean per-task loss [K] of ``model`` (eval mode) over held-out batches."""
    was = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        per = [multitask_loss(model(x.to(dtype)), y.to(dtype), spec)[0] for x, y in batches]
    model.train(was)
    return torch.stack(per).mean(0).tolist()


def _features(model, paths, settings: DemoSettings) -> np.ndarray:
    prep = Preprocessing(jpeg_quality=settings.jpeg_quality, size=settings.image_size)
    return extract_features(
        model, paths, batch_size=64, device="cpu", cache_dir=None, preprocessing=prep, num_workers=1, progress=False
    )


def _detect(model, data: dict, settings: DemoSettings) -> dict:
    """Both detectors on ``model``'s features: the one-class mixture fitted on the ``fit`` reals alone, the
    binary MLP on those and the ``fake_fit`` faces; both scored on ``test`` reals and ``fake_test`` faces."""
    f = {name: _features(model, paths, settings) for name, paths in data.items()}
    with warnings.catch_warnings():
        # The demo reports threshold-free AUC and AP of a small, regularised mixture on 192 photos: the
        # warnings about fit-set size and an in-sample threshold, meant for a user's detector, do not apply.
        warnings.simplefilter("ignore", FitWarning)
        oneclass = OneClassDetector(n_components=settings.components, seed=settings.seed, reg_covar=1e-4)
        oneclass.fit(f["fit"])
    real, fake = oneclass.score(f["test"]), oneclass.score(f["fake_test"])
    labels, scores = labelled(real, fake, "real")
    binary = BinaryDetector(seed=settings.seed).fit(f["fit"], f["fake_fit"], device="cpu")
    b_labels, b_scores = labelled(binary.score(f["test"]), binary.score(f["fake_test"]), "fake")
    return {
        "oneclass": oneclass,
        "real": real,
        "fake": fake,
        "labels": labels,
        "scores": scores,
        "auc": roc_auc(labels, scores),
        "ap": average_precision(labels, scores),
        "binary_auc": roc_auc(b_labels, b_scores),
    }


def loader_rate(loader, batches: int = 24) -> float:
    """Batches per second one batch stream over ``loader`` delivers (its workers started, the consumer idle)."""
    stream = BatchStream(loader)
    stream.next()  # workers started, first batch ready
    t0 = time.perf_counter()
    for _ in range(batches):
        stream.next()
    rate = batches / (time.perf_counter() - t0)
    stream.close()
    return rate


@dataclass
class _Images:
    """Stage 1's files: the pretraining photos and the held-out sets (``fit``, ``test`` reals; ``fake_fit``,
    ``fake_test`` camera-less faces)."""

    train_dir: Path
    held_out: dict[str, list]
    fakes: int


def _simulate(out: Path, s: DemoSettings, echo, progress: bool, seconds: dict) -> _Images:
    """1. The camera photos for pretraining, the held-out photos and the camera-less faces."""
    t = time.perf_counter()
    photos = out / "photos"
    train = simulate_collection(photos / "train", s.train_photos, seed=s.seed, size=s.image_size, progress=progress)
    held = simulate_collection(
        photos / "heldout", s.fit_photos + s.test_photos, seed=s.seed + 1, size=s.image_size, progress=progress
    )
    fake = simulate_uncamera(photos / "no_camera", s.fake_images, seed=s.seed + 2, size=s.image_size, progress=progress)
    half = len(fake) // 2
    data = {
        "fit": held[: s.fit_photos],
        "test": held[s.fit_photos :],
        "fake_fit": fake[:half],
        "fake_test": fake[half:],
    }
    seconds["simulate"] = time.perf_counter() - t
    total = s.train_photos + s.fit_photos + s.test_photos
    echo(
        f"1. simulated {total} camera photos (JPEG + EXIF, {s.image_size}x{s.image_size}) and {len(fake)} "
        f"faces that skipped the camera (PNG) in {seconds['simulate']:.1f} s"
    )
    echo(
        f"   pretraining uses {len(train)}; held out: {len(data['fit'])} real photos to fit the detectors "
        f"(+ {half} camera-less faces for the binary one), {len(data['test'])} real + {len(fake) - half} "
        "camera-less faces to test them"
    )
    return _Images(photos / "train", data, len(fake))


@dataclass
class _Pretrained:
    """Stage 2's outcome: the encoder before and after, the held-out pretext losses and the run's rates."""

    initial_model: torch.nn.Module
    model: torch.nn.Module
    result: PretrainResult
    chance: list[float]
    before: list[float]
    after: list[float]
    step_rate: float
    wait_fraction: float
    loader_rate: float


def _pretrain(out: Path, images: _Images, spec: TaskSpec, s: DemoSettings, echo, progress: bool, seconds: dict):
    """2. Pretraining (the same run loop as `bfdkern pretrain`) on the pretraining photos only, with the pretext
    losses on held-out photos before and after."""
    t = time.perf_counter()
    config = s.pretrain_config(images.train_dir, progress=progress)
    session = Pretraining(config, out / "run", spec=spec, echo=echo)
    initial_model = copy.deepcopy(session.model)
    eval_batches = _eval_batches(images.held_out["fit"], spec, s)
    chance = chance_losses([y for _, y in eval_batches], spec).tolist()
    before = heldout_losses(session.model, eval_batches, spec)
    seconds["prepare"] = time.perf_counter() - t
    stop = session.total_steps if s.max_steps is None else min(s.max_steps, session.total_steps)
    echo(
        f"2. pretraining a small CNN ({s.feature_dim}-d features) for {stop} steps of batch {s.batch_size}, "
        f"bi-level lambda ({s.mode}); AdamW lr {s.lr:g} (the paper's 1e-5 is for ResNet-50 on a large "
        f"collection), lambda Adam lr {s.lambda_lr:g} (paper 3e-4: lambda must move within a few hundred "
        "steps here), cosine schedule"
    )
    t = time.perf_counter()
    result = session.run()
    seconds["pretrain"] = time.perf_counter() - t
    if result.status != "finished":
        raise KeyboardInterrupt
    rate = result.session_steps / max(result.wall_seconds, 1e-9)
    wait = float(np.nansum(_log_column(out / "run", "data_s"))) / max(result.wall_seconds, 1e-9)
    after = heldout_losses(session.model, eval_batches, spec)
    t = time.perf_counter()
    feed = loader_rate(session.streams["tr"].loader)
    seconds["loader check"] = time.perf_counter() - t
    return _Pretrained(initial_model, session.model, result, chance, before, after, rate, wait, feed)


def _detect_both(out: Path, images: _Images, trained: _Pretrained, s: DemoSettings, seconds: dict):
    """3. Both detectors on the random-init and the pretrained encoder, with the ROC and score plots.
    Returns (random-init results, pretrained results, plots)."""
    t = time.perf_counter()
    before, after = _detect(trained.initial_model, images.held_out, s), _detect(trained.model, images.held_out, s)
    plots = dict(trained.result.plots)
    plots["roc"] = plot_roc(  # fakeness = minus the log-likelihood
        {
            "pretrained encoder": (-after["real"], -after["fake"]),
            "random-init encoder": (-before["real"], -before["fake"]),
        },
        out / "plots" / "roc.png",
        title="one-class detector: real vs camera-less faces",
    )
    plots["histogram"] = plot_histograms(
        after["real"],
        {"camera-less": after["fake"]},
        out / "plots" / "scores.png",
        threshold=after["oneclass"].threshold,
        score_name="log-likelihood",
        title="one-class scores (pretrained encoder)",
    )
    seconds["detect"] = time.perf_counter() - t
    return before, after, plots


def run_demo(
    out_dir: str | Path = "bfdkern-demo",
    settings: DemoSettings | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> DemoResult:
    """Run the demo in ``out_dir`` (see the module docstring) and print its report through ``echo``."""
    s = settings or DemoSettings()
    spec = s.spec()
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    blas = threadpool_limits(s.threads)  # NumPy/scikit-learn too: spinning threads only slow a busy CPU
    try:
        out = prepare_folder(out_dir)
        echo(f"bfdkern demo: BLADES on simulated camera photos, in {out.resolve()}")
        echo(f"  torch {torch.__version__} on the CPU, {s.threads} thread(s) for the model, {s.workers} data workers")
        images = _simulate(out, s, echo, progress, seconds)
        trained = _pretrain(out, images, spec, s, echo, progress, seconds)
        before_detect, after_detect, plots = _detect_both(out, images, trained, s, seconds)
        seconds["total"] = time.perf_counter() - t_start
        demo = DemoResult(
            out_dir=out,
            settings=s,
            auc=after_detect["auc"],
            ap=after_detect["ap"],
            auc_random_init=before_detect["auc"],
            binary_auc=after_detect["binary_auc"],
            binary_auc_random_init=before_detect["binary_auc"],
            tasks=list(spec.names),
            outer_tasks=[spec.tasks[k].name for k in spec.outer_indices],
            loss_before=trained.before,
            loss_after=trained.after,
            chance=trained.chance,
            lambda_before=trained.result.initial_lambdas,
            lambda_after=trained.result.lambdas,
            steps=trained.result.steps,
            step_rate=trained.step_rate,
            loader_rate=trained.loader_rate,
            data_wait_fraction=trained.wait_fraction,
            data_wait_median=trained.result.data_seconds,
            step_median=trained.result.step_seconds,
            seconds=seconds,
            plots=plots,
        )
        for line in report(demo).splitlines():  # 4. the report
            echo(line)
        (out / MARKER).write_text(json.dumps(_jsonable(demo), indent=2) + "\n")
        return demo
    finally:
        torch.set_num_threads(threads)
        blas.restore_original_limits()


def _log_column(run_dir: Path, name: str) -> np.ndarray:
    return read_log(run_dir)[name]


DOWN_WEIGHTED = 0.25
"""A task whose lambda ends below this fraction of its start was turned down by the outer objective."""


def report(d: DemoResult) -> str:
    """The demo's closing report: pretext tasks vs chance, lambda, data rate, detection, plots, timings."""
    s = d.settings
    lines = [
        f"3. pretext tasks on {min(s.eval_samples, 4 * s.fit_photos) // s.batch_size * s.batch_size} held-out "
        "samples (loss; chance = best constant prediction on the same targets):"
    ]
    lines.append(
        f"   {'task':<17}{'before':>8}{'after':>8}{'chance':>8}{'after/chance':>14}  {'learned':<9}{'lambda':>15}"
    )
    for k, name in enumerate(d.tasks):
        lam = f"{d.lambda_before[k]:.3f} -> {d.lambda_after[k]:.3f}"
        ratio = f"{100 * d.loss_after[k] / d.chance[k]:.0f}%"
        lines.append(
            f"   {name:<17}{d.loss_before[k]:>8.4f}{d.loss_after[k]:>8.4f}{d.chance[k]:>8.4f}{ratio:>14}  "
            f"{'yes' if d.learned[k] else 'no':<9}{lam:>15}"
        )
    moved = max(abs(a - b) for a, b in zip(d.lambda_before, d.lambda_after))
    lines.append(
        f"   {sum(d.learned)} of {len(d.tasks)} tasks learned (held-out loss {100 * LEARNED_MARGIN:.0f}% or more below "
        f"chance); lambda moved by up to {moved:.3f}"
    )
    missed = [k for k, ok in enumerate(d.learned) if not ok]
    if missed:
        outer = [d.tasks[k] for k in missed if d.tasks[k] in d.outer_tasks]
        lines.append(
            f"   not learned within this budget: {', '.join(d.tasks[k] for k in missed)}"
            + (f" (including the outer task l_1: {', '.join(outer)})" if outer else "")
        )
        # A task whose weight the outer objective drove down got little gradient: the bi-level update
        # judged it unhelpful for l_1, which is the method at work rather than a failure to learn.
        down = [k for k in missed if d.lambda_after[k] < DOWN_WEIGHTED * d.lambda_before[k]]
        if down:
            shown = ", ".join(f"{d.tasks[k]} {d.lambda_before[k]:.2f} -> {d.lambda_after[k]:.2f}" for k in down)
            lines.append(
                f"   of these, the outer objective turned down lambda of {shown}: little gradient reached them"
            )
    lines.append(
        f"   data loading: training ran at {d.step_rate:.2f} steps/s (a B_tr and a B_val batch each; median step "
        f"{1000 * d.step_median:.0f} ms) and waited {1000 * d.data_wait_median:.0f} ms a step for data (median; "
        f"{100 * d.data_wait_fraction:.0f}% of the time in all); one stream alone delivers {d.loader_rate:.1f} "
        f"batches/s with {s.workers} workers, about {d.loader_rate / 2:.1f} steps/s when both streams share the CPU"
    )
    lines.append(
        f"4. detectors on the frozen encoder's features ({s.fit_photos} held-out real photos to fit; tested on "
        f"{s.test_photos} real vs {s.fake_images - s.fake_images // 2} camera-less faces; every image re-encoded "
        f"as JPEG q{s.jpeg_quality}):"
    )
    lines.append(
        f"   one-class ({s.components}-component Gaussian mixture, real photos only): AUC {d.auc:.3f}, AP {d.ap:.3f}"
        f"   (random-init encoder: AUC {d.auc_random_init:.3f})"
    )
    lines.append(
        f"   binary MLP (also fitted on {s.fake_images // 2} camera-less faces):  AUC {d.binary_auc:.3f}"
        f"   (random-init encoder: AUC {d.binary_auc_random_init:.3f})"
    )
    lines.extend(_detection_notes(d))
    lines.append("plots:")
    for name, path in d.plots.items():
        lines.append(f"   {name:<10} {path}")
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in d.seconds.items() if k != "total")
    lines.append(f"done in {d.seconds.get('total', float('nan')):.0f} s ({timing})")
    return "\n".join(lines)


def _detection_notes(d: DemoResult) -> list[str]:
    """Plain-language reading of the detection numbers (AUC 0.5 = chance)."""
    notes = []
    if d.auc < 0.65:
        notes.append(
            "   note: the one-class AUC is near chance: in this simulation the camera-less faces fall inside the "
            "distribution of the real photos' features"
            + (
                ", although the features do separate them (see the binary detector)"
                if d.binary_auc >= 0.8
                else ", and the binary detector separates them poorly too"
            )
        )
    if d.auc < d.auc_random_init:
        notes.append("   note: pretraining did not improve the one-class AUC over the random-init encoder here")
    return notes


def _jsonable(d: DemoResult) -> dict:
    out = {k: v for k, v in asdict(d).items() if k not in ("out_dir", "plots", "settings")}
    out.update(
        status="done", settings=asdict(d.settings), plots={k: str(v) for k, v in d.plots.items()}, learned=d.learned
    )
    return out
