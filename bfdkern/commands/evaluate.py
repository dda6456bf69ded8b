"""`bfdkern evaluate --detector FILE --real DIR --fake NAME=DIR ... --out DIR`: AUC, AP and accuracy per
generator and their mean, as a table, CSV and JSON, with ROC curves and score histograms."""

from __future__ import annotations

HELP = "evaluate a detector: AUC, AP and accuracy per generator and their mean, with ROC and histogram plots"


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser``."""
    from bfdkern.commands.options import add_feature_arguments

    parser.add_argument(
        "--list", action="store_true", help="list the registered detectors and which need user-supplied weights"
    )
    parser.add_argument(
        "--detector",
        action="append",
        metavar="[NAME=]FILE",
        help="detector file from fit-oneclass/fit-binary, a CNND/GramNet .pt file, or hu21; repeat to compare "
        "several on the same images (one folder each under --out, and comparison.csv/png)",
    )
    parser.add_argument(
        "--real",
        metavar="DIR",
        help="folder of real test images (not the ones the detector was fitted on)",
    )
    parser.add_argument(
        "--fake",
        action="append",
        metavar="NAME=DIR",
        help="a generator's name and its folder of images; repeat for each generator",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for results.csv, results.json, scores.csv, roc.png, histograms.png",
    )
    parser.add_argument(
        "--encoder",
        metavar="SOURCE",
        help="encoder run, checkpoint, torchscript:FILE or torchvision:ARCH:FILE (default: the detector file's)",
    )
    add_feature_arguments(parser)


def parse_fakes(items) -> dict:
    """["NAME=DIR", ...] -> {NAME: DIR}; names must be unique and non-empty."""
    fakes = {}
    for item in items:
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not name or not folder:
            raise ValueError(f"--fake {item!r}: expected NAME=DIR, for example --fake stylegan2=data/stylegan2")
        if name in fakes:
            raise ValueError(f"--fake {item!r}: generator name {name!r} given twice")
        fakes[name] = folder
    return fakes


def _listing() -> str:
    """The detector catalogue with the ablation presets of the recipes as one-class variants."""
    from bfdkern.detect.registry import DetectorEntry, catalogue, format_catalogue
    from bfdkern.recipes.ablations import PRESETS

    variants = [
        DetectorEntry(p.name, "oneclass", p.description, f"bfdkern ablate --presets {p.name}")
        for p in PRESETS.values()
        if p.name != "blades"  # the catalogue's blades-oc
    ]
    return format_catalogue(catalogue(variants))


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    from bfdkern.commands.options import run_command

    return run_command("evaluate", lambda: _evaluate(args), device=args.device)


def _evaluate(args) -> int:
    from bfdkern.commands.options import feature_kwargs
    from bfdkern.detect import format_table, list_images
    from bfdkern.detect.encoder import load_detector_with_any_encoder
    from bfdkern.detect.registry import load_scorer

    if args.list:
        print(_listing())
        return 0
    missing = [f"--{name}" for name in ("detector", "real", "fake", "out") if not getattr(args, name)]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or --list)")

    fakes = parse_fakes(args.fake)
    real_paths = list_images(args.real)
    fake_paths = {name: list_images(folder) for name, folder in fakes.items()}
    if len(args.detector) > 1:
        return _compare(args, real_paths, fake_paths)
    item = args.detector[0]
    _, sep, what = item.partition("=")
    target = what if sep else item
    kw = feature_kwargs(args)
    if target.endswith(".npz"):  # a fitted head on a frozen encoder: the encoder's identity goes in the results
        det, _, encoder = load_detector_with_any_encoder(target, args.encoder)
        extra = {"detector_file": target, "encoder": encoder.identity, "preprocessing": det.preprocessing.to_dict()}
        prefix = ""

        def score(paths):  # the detector's preprocessing, the same for the real and every generator's images
            return det.score(encoder.features(paths, det.preprocessing, **kw))

    else:  # a CNND / GramNet file or a training-free detector: it scores image files itself
        name, det, score = load_scorer(item, args.encoder, kw)
        extra, prefix = {"detector_file": target}, f"{name}: "
    result, files = _score_and_write(det, score, real_paths, fake_paths, args.out, extra)
    print(prefix + format_table(result))
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def _score_and_write(det, score, real_paths, fake_paths, out, extra=None):
    """Score the real and every generator's images, compute the metrics and write them to ``out``; returns
    (result, files)."""
    from bfdkern.detect import evaluate_scores, write_results

    real_scores = score(real_paths)
    fake_scores = {n: score(p) for n, p in fake_paths.items()}
    result = {**evaluate_scores(det, real_scores, fake_scores), **(extra or {})}
    files = write_results(
        result,
        out,
        real_paths=real_paths,
        real_scores=real_scores,
        fake_paths=fake_paths,
        fake_scores=fake_scores,
        detector=det,
    )
    return result, files


def _compare(args, real_paths, fake_paths) -> int:
    """Several detectors on the same images: each one's results in ``OUT/NAME``, and one comparison table."""
    from pathlib import Path

    from bfdkern.commands.options import feature_kwargs
    from bfdkern.detect import format_table
    from bfdkern.detect.registry import load_scorer
    from bfdkern.recipes.ablations import write_comparison

    scorers = [load_scorer(item, args.encoder, feature_kwargs(args)) for item in args.detector]
    names = [name for name, _, _ in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f"--detector names {names} repeat; give each a name, e.g. --detector oc=FILE")
    rows = []
    for name, det, score in scorers:
        result, _ = _score_and_write(det, score, real_paths, fake_paths, Path(args.out) / name)
        print(f"{name}: " + format_table(result))
        row = {"detector": name, "kind": det.kind, "positive_class": det.positive_class}
        row.update({f"auc_{r['generator']}": r["auc"] for r in result["rows"]})
        rows.append({**row, **result["mean"]})
    files = write_comparison(rows, args.out, label="detector", stem="comparison", title="detectors compared")
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0
