"""`bfdkern evaluate --detector FILE --real [NAME=]DIR --fake NAME=DIR ... --out DIR`: every metric the field
reports (AUC, AP, ACC with real and fake accuracy, EER, TPR at 5% and 1% FPR) per real source and generator
and their means, for one or several detectors, optionally under perturbations; the paper's table (CSV,
Markdown, LaTeX), JSON with everything, ROC curves, histograms and comparison plots; the files of each class
reported, a test set that overlaps a detector's fit set refused."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bfdkern.commands.options import (
    add_feature_arguments,
    add_strict_argument,
    feature_kwargs,
    run_command,
    skipped_status,
)

HELP = "evaluate detectors: AUC, AP, ACC, EER, TPR@FPR per real source and generator, tables, plots, robustness"

TABLE_FORMATS = ("csv", "md", "tex")
DEFAULT_METRICS = "auc,ap_fake,acc"


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    parser.add_argument(
        "--list", action="store_true", help="list the registered detectors and which need user-supplied weights"
    )
    parser.add_argument(
        "--detector",
        action="append",
        metavar="[NAME=]FILE",
        help="detector file from fit-oneclass/fit-binary, a CNND/GramNet .pt file, or hu21; repeat to compare "
        "several on the same images (one folder each under --out, methods as rows of the table)",
    )
    parser.add_argument(
        "--real",
        action="append",
        metavar="[NAME=]DIR",
        help="folder of real test images (not the ones the detector was fitted on); repeat as NAME=DIR for "
        "several real sources (results per source and averaged)",
    )
    parser.add_argument(
        "--fake",
        action="append",
        metavar="NAME=DIR",
        help="a generator's name and its folder of images; repeat for each generator",
    )
    parser.add_argument("--out", metavar="DIR", help="folder for the results, tables and plots")
    parser.add_argument(
        "--encoder",
        metavar="SOURCE",
        help="encoder run, checkpoint, torchscript:FILE or torchvision:ARCH:FILE (default: the detector file's)",
    )
    g = parser.add_argument_group("tables and robustness")
    g.add_argument(
        "--table",
        choices=TABLE_FORMATS,
        default="md",
        help="print the paper's table (methods x generators, mean last) in this format (default md); "
        "table.csv, table.md and table.tex are always written",
    )
    g.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        metavar="LIST",
        help="comma-separated metrics of the table: auc, ap_fake, ap_real, acc, real_acc, fake_acc, eer, "
        f"tpr_at_fpr5, tpr_at_fpr1, or all (default {DEFAULT_METRICS}); the JSON always holds all",
    )
    g.add_argument(
        "--perturb",
        action="append",
        metavar="SPEC",
        help="also evaluate under a perturbation applied identically to real and fake images after the "
        "preprocessing: jpeg=Q, blur=SIGMA, resize=F[:FILTER], noise=SIGMA, chained with + (blur=1+jpeg=75); "
        "repeat for a sweep (the clean images are always evaluated first)",
    )
    g.add_argument("--perturb-seed", type=int, default=0, help="seed of the random perturbations (noise; default 0)")
    g.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even when test images are in a detector's fit set (same file content); a warning instead",
    )
    add_feature_arguments(parser)
    add_strict_argument(parser)


def parse_fakes(items) -> dict:
    """["NAME=DIR", ...] -> {NAME: DIR}; names must be unique and non-empty."""
    fakes = {}
    for item in items:
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not name or not folder:
            raise ValueError(f"--fake {item!r}: expected NAME=DIR, for example --fake stylegan2=data/stylegan2")
        if name in fakes or name == "mean":
            raise ValueError(f"--fake {item!r}: generator name {name!r} given twice (or reserved)")
        fakes[name] = folder
    return fakes


def parse_reals(items) -> dict:
    """["DIR"] or ["NAME=DIR", ...] -> {NAME: DIR}. A plain DIR is named ``real`` when it is the only one, else by
    its folder name; ``NAME=DIR`` is recognised when NAME has no path separator and the whole is no folder."""
    reals: dict[str, str] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if sep and name.strip() and folder and os.sep not in name and not Path(item).is_dir():
            name = name.strip()
        else:
            folder = item
            name = "real" if len(items) == 1 else Path(item.rstrip(os.sep)).name or item
        if name in reals or name == "mean":
            raise ValueError(f"--real {item!r}: real source name {name!r} given twice (or reserved); use NAME=DIR")
        reals[name] = folder
    return reals


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"auc,ap_fake"`` or ``"all"`` -> metric keys; ValueError naming an unknown one."""
    from bfdkern.detect.metrics import METRIC_KEYS

    if text.strip() == "all":
        return METRIC_KEYS
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in METRIC_KEYS]
    if unknown or not keys:
        raise ValueError(f"--metrics {text!r}: unknown {unknown}; expected some of {', '.join(METRIC_KEYS)} or all")
    return keys


def _listing() -> str:
    """The detector catalogue with the ablation presets of the recipes as one-class variants."""
    from bfdkern.detect.registry import DetectorEntry, catalogue, format_catalogue
    from bfdkern.recipes.presets import PRESETS

    variants = [
        DetectorEntry(p.name, "oneclass", p.description, f"bfdkern ablate --presets {p.name}")
        for p in PRESETS.values()
        if p.name != "blades"  # the catalogue's blades-oc
    ]
    return format_catalogue(catalogue(variants))


def run(args) -> int:
    """Run the command: 0 on success (images skipped as unreadable are reported), 3 when some were skipped under
    --strict, 2 on a bad input (the message names it)."""
    return run_command("evaluate", lambda: _evaluate(args), device=args.device)


def _evaluate(args) -> int:
    from bfdkern.detect import list_images
    from bfdkern.detect.perturb import Perturbation
    from bfdkern.detect.registry import load_scorer

    if args.list:
        print(_listing())
        return 0
    missing = [f"--{name}" for name in ("detector", "real", "fake", "out") if not getattr(args, name)]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or --list)")
    reals = {n: list_images(d) for n, d in parse_reals(args.real).items()}
    fakes = {n: list_images(d) for n, d in parse_fakes(args.fake).items()}
    metrics = parse_metrics(args.metrics)
    conditions = [None, *(Perturbation.parse(p, args.perturb_seed) for p in args.perturb or [])]
    names = [c.name for c in conditions[1:]]
    if len(set(names)) != len(names):
        raise ValueError(f"--perturb {names}: a perturbation is given twice")
    scorers = [load_scorer(item, args.encoder, feature_kwargs(args)) for item in args.detector]
    methods = [s.name for s in scorers]
    if len(set(methods)) != len(methods):
        raise ValueError(f"--detector names {methods} repeat; give each a name, e.g. --detector oc=FILE")
    for s in scorers:
        for note in s.extra.get("warnings", []):
            print(f"bfdkern evaluate: warning: {note}", file=sys.stderr)

    out = Path(args.out)
    files_report = _files_report(reals, fakes, scorers, args)
    overlap = _overlap(files_report["infos"], scorers, args.allow_overlap)

    entries, per_detector, skipped = [], [], {}
    for scorer in scorers:
        folder = out if len(scorers) == 1 else out / scorer.name
        record = _evaluate_one(scorer, reals, fakes, conditions, folder, metrics)
        per_detector.append(record["summary"])
        entries += record["entries"]
        for s in record["skipped"]:
            skipped.setdefault(str(s.path), s)
    written = _write_overview(out, entries, per_detector, files_report, overlap, list(skipped.values()), args, metrics)
    total = sum(len(p) for p in [*reals.values(), *fakes.values()])
    print("wrote " + ", ".join(str(p) for p in written))
    return skipped_status("evaluate", list(skipped.values()), total, args.strict)


def _files_report(reals: dict, fakes: dict, scorers, args) -> dict:
    """Inspect every class's files (format, size, JPEG quality, content hash), print the table and the format
    shortcut warnings."""
    from bfdkern.detect.formats import format_report, inspect_files, shortcut_warnings, summarize

    infos = {("real", n): inspect_files(p, workers=args.workers, progress=not args.quiet) for n, p in reals.items()}
    infos.update(
        {("fake", n): inspect_files(p, workers=args.workers, progress=not args.quiet) for n, p in fakes.items()}
    )
    summaries = {key: summarize(v) for key, v in infos.items()}
    labelled = {f"{n} ({c})": s for (c, n), s in summaries.items()}
    print("the test files, per class:")
    print(format_report(labelled))
    reencode = {s.name: _reencode_quality(s) for s in scorers}
    warnings = shortcut_warnings(
        {n: s for (c, n), s in summaries.items() if c == "real"},
        {n: s for (c, n), s in summaries.items() if c == "fake"},
        reencode,
    )
    for w in warnings:
        print(f"bfdkern evaluate: warning: {w}", file=sys.stderr)
    return {
        "infos": infos,
        "summaries": {f"{c}:{n}": s for (c, n), s in summaries.items()},
        "shortcut_warnings": warnings,
    }


def _reencode_quality(scorer) -> int | None:
    prep = scorer.extra.get("preprocessing")
    if prep is not None:
        return prep.get("jpeg_quality")
    return None  # CNND, GramNet and Hu21 see the decoded pixels as they are


def _overlap(infos: dict, scorers, allowed: bool) -> dict:
    """Test images whose content is in a detector's fit set: an error naming them, or (allowed) a warning."""
    found = {}
    for scorer in scorers:
        fit = getattr(scorer.detector, "fit_hashes", frozenset())
        if not fit:
            continue
        hits = [(c, n, i.path) for (c, n), items in infos.items() for i in items if i.sha256 in fit]
        if hits:
            found[scorer.name] = [{"class": c, "set": n, "path": str(p)} for c, n, p in hits]
            counts = {}
            for c, n, _ in hits:
                counts[f"{n} ({c})"] = counts.get(f"{n} ({c})", 0) + 1
            text = (
                f"{len(hits)} test images are in the fit set of detector {scorer.name} (same file content): "
                f"{', '.join(f'{k}: {v}' for k, v in counts.items())}; e.g. {hits[0][2]}. They inflate the results"
            )
            if not allowed:
                raise ValueError(text + "; remove them from the test folders, or pass --allow-overlap")
            print(f"bfdkern evaluate: warning: {text} (--allow-overlap)", file=sys.stderr)
    return found


def _evaluate_one(scorer, reals, fakes, conditions, folder, metrics) -> dict:
    """Score every class under every condition with one detector; write its folder's files; print its table."""
    from bfdkern.detect import evaluate_scores, format_table, write_results
    from bfdkern.detect.features import skipped_record, warn_no_face

    det = scorer.detector
    entries, clean, perturbed, skipped = [], None, [], []
    for condition in conditions:
        label = "clean" if condition is None else condition.name
        real = {n: scorer.score_files(p, condition) for n, p in reals.items()}
        fake = {n: scorer.score_files(p, condition) for n, p in fakes.items()}
        result = evaluate_scores(det, {n: r.scores for n, r in real.items()}, {n: f.scores for n, f in fake.items()})
        entries.append({"method": scorer.name, "perturbation": label, "result": result})
        if condition is None:
            clean = (result, real, fake)
            every = [*real.values(), *fake.values()]
            skipped = [s for r in every for s in r.skipped]
            warn_no_face([p for r in every for p in r.no_face], sum(len(r.paths) for r in every))
            print(f"\n{scorer.name}: " + format_table(result))
        else:
            perturbed.append({"perturbation": label, **result})
    result, real, fake = clean
    full = {**result, **scorer.extra, "method": scorer.name, "perturbed": perturbed}
    write_results(
        full,
        folder,
        real_paths={n: r.paths for n, r in real.items()},
        real_scores={n: r.scores for n, r in real.items()},
        fake_paths={n: f.paths for n, f in fake.items()},
        fake_scores={n: f.scores for n, f in fake.items()},
        detector=det,
    )
    summary = {**full, "skipped": skipped_record(skipped, keep=10_000)}
    return {"entries": entries, "summary": summary, "skipped": skipped}


def _write_overview(out, entries, per_detector, files_report, overlap, skipped, args, metrics) -> list:
    """evaluation.json (everything), table.{csv,md,tex}, comparison.png (every metric, clean images) and, with
    perturbations, robustness.png; the chosen table printed."""
    from bfdkern.detect.evaluation import MEAN
    from bfdkern.detect.features import skipped_record
    from bfdkern.detect.metrics import METRICS
    from bfdkern.detect.plots import plot_comparison, plot_robustness
    from bfdkern.detect.tables import format_paper_table

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in ("csv", "md", "tex"):
        path = out / f"table.{fmt}"
        path.write_text(format_paper_table(entries, fmt, metrics))
        written.append(path)
    print(f"\nthe table ({args.table}; metrics in %, fake = positive class):")
    print(format_paper_table(entries, args.table, metrics))
    overview = {
        "metrics": {m.key: {"label": m.label, "meaning": m.meaning} for m in METRICS},
        "conventions": "fake is the positive class of every metric; ap_real is AP with real as the positive class",
        "detectors": per_detector,
        "files": files_report["summaries"],
        "format_warnings": files_report["shortcut_warnings"],
        "overlap_with_fit_sets": overlap,
        "skipped": skipped_record(skipped, keep=10_000),
        "perturbations": [e["perturbation"] for e in entries if e["method"] == entries[0]["method"]],
        "perturb_seed": args.perturb_seed,
    }
    path = out / "evaluation.json"
    path.write_text(json.dumps(overview, indent=2, default=str) + "\n")
    written.append(path)
    clean, robustness = {}, {}
    for e in entries:
        sources = e["result"]["real_sources"]
        rows = [r for r in e["result"]["rows"] if r["real"] == (MEAN if len(sources) > 1 else sources[0])]
        if e["perturbation"] == "clean":
            clean[e["method"]] = {r["generator"]: r for r in rows}
        robustness.setdefault(e["method"], {})[e["perturbation"]] = e["result"]["mean"]
    written.append(plot_comparison(clean, out / "comparison.png", title="detectors compared (clean images)"))
    if len(overview["perturbations"]) > 1:
        written.append(plot_robustness(robustness, out / "robustness.png"))
    return written
