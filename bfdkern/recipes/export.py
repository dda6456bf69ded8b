"""A pretraining run as a shareable folder: ``config.json`` + ``model.safetensors`` (the encoder, loadable with
:meth:`bfdkern.models.BladesModel.from_pretrained` or as ``--encoder DIR``), ``lambda.png`` and a generated model
card ``README.md``: what the encoder is and how to use it, the training data, the tasks and their learned
lambda, the evaluation tables found for it, and its provenance (bfdkern version and git commit).

Nothing in the folder names the machine it came from: the training data is described by its folder name and
counts, not its absolute path.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bfdkern.models import CHECKPOINT_NAME, read_checkpoint
from bfdkern.models.encoder import model_from_checkpoint
from bfdkern.models.normalization import statistics_name
from bfdkern.models.pretrained import CONFIG_FILE, WEIGHTS_FILE
from bfdkern.training import load_checkpoint, read_log
from bfdkern.training.plots import plot_lambdas
from bfdkern.version import __version__ as installed

LAMBDA_PNG = "lambda.png"
CARD = "README.md"


@dataclass
class Export:
    """What :func:`export_run` wrote: the folder, its files, and the evaluation results it included."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    results: list[Path] = field(default_factory=list)


def provenance() -> dict:
    """``{"version": bfdkern's version, "commit": the git commit of its source tree or None, "dirty": bool}``."""
    source = Path(__file__).resolve().parent.parent
    commit, dirty = None, False
    try:
        run = lambda *args: subprocess.run(
            ["git", *args], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD") or None
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # no git, or an installed copy outside a repository
        pass
    return {"version": installed, "commit": commit, "dirty": dirty}


def _skipped(run_dir: Path) -> dict[str, int]:
    path = run_dir / "skipped.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return dict(Counter(row.get("reason", "?") for row in csv.DictReader(f)))


def find_results(run_dir: Path, extra=()) -> list[Path]:
    """``results.json`` files of ``bfdkern evaluate`` under ``run_dir`` (two levels deep) and in ``extra``
    (folders or files), in order, each once."""
    found = sorted(run_dir.glob("*/results.json")) + sorted(run_dir.glob("*/*/results.json"))
    for item in extra:
        p = Path(item)
        p = p / "results.json" if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such evaluation results file (bfdkern evaluate --out DIR writes one)")
        found.append(p)
    return list(dict.fromkeys(p.resolve() for p in found))


def _training_summary(run_dir: Path, encoder_extra: dict) -> dict:
    """Data, tasks and lambda of the run, from its encoder file, checkpoint, skipped.csv and chance.json."""
    config = dict(encoder_extra.get("pretrain_config") or {})
    if (
        config.get("init")
        and config["init"] not in ("random", "imagenet")
        and not config["init"].startswith("imagenet:")
    ):
        config["init"] = Path(config["init"]).name  # a file: its name, not where it was on the training machine
    summary = {
        "steps": encoder_extra.get("steps"),
        "tasks": list(encoder_extra.get("tasks") or []),
        "lambdas": list(encoder_extra.get("lambdas") or []),
        "initial_lambdas": None,
        "images": None,
        "steps_per_epoch": None,
        "skipped": _skipped(run_dir),
        "data": Path(config["data"]).name if config.get("data") else None,
        "config": {k: v for k, v in config.items() if k not in ("data", "device", "workers", "progress")},
    }
    if (run_dir / "checkpoint.pt").is_file():
        extra = load_checkpoint(run_dir / "checkpoint.pt")["extra"]
        summary["initial_lambdas"] = extra.get("initial_lambdas")
        identity = extra.get("identity") or {}
        summary["images"], summary["steps_per_epoch"] = identity.get("images"), identity.get("steps_per_epoch")
        summary["chance"] = extra.get("chance")
    return summary


def export_run(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, results=(), overwrite: bool = False
) -> Export:
    """Write the shareable folder of the finished run ``run_dir`` (its ``encoder.pt``) into ``out_dir``.

    Args:
        results: more ``bfdkern evaluate`` output folders or ``results.json`` files for the card (those under
            ``run_dir`` are found by themselves).
        overwrite: write into a folder that already holds files (else refused).

    Raises FileNotFoundError (no finished run) or ValueError (a damaged file, a non-empty folder)."""
    run_dir, out = Path(run_dir), Path(out_dir)
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise FileNotFoundError(
            f"{run_dir / CHECKPOINT_NAME}: no such file: export needs a finished run (pretrain writes it at the end)"
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out}: the folder is not empty; choose another -o, or pass --overwrite")
    payload = read_checkpoint(run_dir)
    model = model_from_checkpoint(payload)
    summary = _training_summary(run_dir, payload.get("extra") or {})
    result_files = find_results(run_dir, results)
    evaluations = [_read_result(p) for p in result_files]
    origin = provenance()
    model.save_pretrained(
        out,
        extra_config={
            "bfdkern": origin,
            "pretrain_config": summary["config"],
            "training": {k: v for k, v in summary.items() if k != "config"},
            "evaluations": [{"file": p.parent.name, **r} for p, r in zip(result_files, evaluations)],
        },
    )
    written = [out / CONFIG_FILE, out / WEIGHTS_FILE]
    if (run_dir / LAMBDA_PNG).is_file():
        shutil.copyfile(run_dir / LAMBDA_PNG, out / LAMBDA_PNG)
        written.append(out / LAMBDA_PNG)
    elif (run_dir / "log.csv").is_file() and model.spec is not None:
        written.append(plot_lambdas(read_log(run_dir / "log.csv"), model.spec, out / LAMBDA_PNG))
    card = model_card(model, summary, evaluations, [p.parent.name for p in result_files], origin, out)
    (out / CARD).write_text(card)
    written.append(out / CARD)
    return Export(out, written, result_files)


def _read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable evaluation results ({exc})") from None
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list) or "mean" not in result:
        raise ValueError(f"{path}: not a results.json of bfdkern evaluate (no rows and mean)")
    keep = ("detector", "positive_class", "score", "threshold", "rows", "mean", "preprocessing")
    return {k: result[k] for k in keep if k in result}


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_card(model, summary: dict, evaluations: list[dict], names: list[str], origin: dict, folder: Path) -> str:
    """The ``README.md`` of an exported folder (Markdown)."""
    mean, std = model.statistics
    stats = {"imagenet": "ImageNet", "clip": "CLIP"}.get(statistics_name(mean, std), "its own")
    size = model.input_size or summary["config"].get("image_size")
    tasks, lam = summary["tasks"], summary["lambdas"]
    lines = [
        "---",
        "library_name: bfdkern",
        "tags: [face-forensics, ai-generated-face-detection, self-supervised, blades]",
        "---",
        "",
        f"# BLADES encoder: {folder.name}",
        "",
        f"A {model.backbone_name} encoder with a {model.feature_dim}-d embedding, pretrained by bfdkern on real "
        "camera photos only, with EXIF and face-manipulation pretext tasks whose weights lambda were learned by "
        "bi-level optimisation (BLADES). Its L2-normalised features feed a one-class Gaussian mixture or a binary "
        "MLP that tells AI-generated faces from real ones.",
        "",
        "## Use",
        "",
        f"Inputs: RGB images in [0, 1], {size} x {size} pixels (the centred square, resized); the model normalises "
        f"them itself with the {stats} statistics mean {list(mean)}, std {list(std)}.",
        "",
        "```python",
        "from bfdkern.models import BladesModel",
        "",
        f'model = BladesModel.from_pretrained("{folder.name}").eval()',
        "features = model.features(images)  # [B, 3, H, W] in [0, 1] -> [B, D], unit vectors",
        "```",
        "",
        "```bash",
        f"bfdkern fit-oneclass --encoder {folder.name} --real REAL_FACES/ -o oc.npz",
        "bfdkern evaluate --detector oc.npz --real REAL_TEST/ --fake NAME=FAKE_TEST/ --out eval/",
        "```",
        "",
        "## Training data",
        "",
    ]
    used = summary.get("images")
    data = f"`{summary['data']}`" if summary.get("data") else "an unrecorded folder"
    lines.append(f"- photos: {data}, {used if used is not None else 'an unrecorded number of'} images used")
    skipped = summary.get("skipped") or {}
    if skipped:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
        lines.append(f"- skipped: {sum(skipped.values())} files ({reasons})")
    cfg = summary["config"]
    lines.append(
        f"- {summary.get('steps') or '?'} steps"
        + (f" ({summary['steps_per_epoch']} per epoch)" if summary.get("steps_per_epoch") else "")
        + f", batch {cfg.get('batch_size', '?')}, {cfg.get('image_size', '?')} px"
        + (", faces cropped" if cfg.get("face_crop") else "")
        + f", started from `{cfg.get('init') or 'random'}`"
    )
    settings = ", ".join(
        f"{k} {cfg[k]}" for k in ("epochs", "lr", "weight_decay", "lambda_lr", "mode", "seed", "dtype") if k in cfg
    )
    if settings:
        lines.append(f"- {settings}")
    lines += ["", "## Tasks and their learned lambda", ""]
    if tasks and lam:
        initial = summary.get("initial_lambdas") or [None] * len(tasks)
        chance = summary.get("chance") or [None] * len(tasks)
        kinds = {t.name: t for t in model.spec.tasks} if model.spec is not None else {}
        lines += ["| task | kind | lambda at start | lambda at the end | chance loss |", "|---|---|---:|---:|---:|"]
        for k, name in enumerate(tasks):
            task = kinds.get(name)
            kind = (task.kind + (" (outer)" if task.outer else "")) if task else "?"
            lines.append(f"| {name} | {kind} | {_fmt(initial[k], 4)} | {_fmt(lam[k], 4)} | {_fmt(chance[k])} |")
    else:
        lines.append("The run's encoder file records no tasks or lambda.")
    if (folder / LAMBDA_PNG).is_file():
        lines += ["", f"![lambda during training]({LAMBDA_PNG})"]
    lines += ["", "## Evaluation", ""]
    if not evaluations:
        lines.append("No evaluation results were found for this encoder (`bfdkern evaluate --out RUN/eval` adds them).")
    for name, result in zip(names, evaluations):
        positive = result.get("positive_class", "?")
        lines += [
            f"### {name}: {result.get('detector', '?')} detector (score {result.get('score', '?')}, positive class "
            f"{positive})",
            "",
            "| real | generator | real images | fake images | AUC | AP (fake = positive) | ACC |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in result["rows"]:
            if "mean" in (r.get("real"), r.get("generator")):  # the means: one overall row below
                continue
            lines.append(
                f"| {r.get('real', 'real')} | {r.get('generator')} | {r.get('n_real')} | {r.get('n_fake')} | "
                f"{_fmt(r.get('auc'))} | {_fmt(r.get('ap_fake'))} | {_fmt(r.get('acc'))} |"
            )
        m = result["mean"]
        lines += [
            f"| **mean** | | | | {_fmt(m.get('auc'))} | {_fmt(m.get('ap_fake'))} | {_fmt(m.get('acc'))} |",
            "",
        ]
    commit = origin.get("commit")
    commit_text = f"git commit `{commit}`" + (" (with uncommitted changes)" if origin.get("dirty") else "")
    lines += [
        "",
        "## Provenance",
        "",
        f"- bfdkern {origin.get('version')}, {commit_text if commit else 'git commit unknown (not a git checkout)'}",
        "- method: Zou et al., Bi-Level Optimization for Self-Supervised AI-Generated Face Detection, ICCV 2025",
        "",
    ]
    return "\n".join(lines)
