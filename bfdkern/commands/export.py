"""`bfdkern export RUN -o DIR`: a finished pretraining run as a shareable folder: ``config.json`` +
``model.safetensors`` (``BladesModel.from_pretrained(DIR)``, or ``--encoder DIR`` in every detection command),
``lambda.png`` and a generated model card ``README.md`` (training data, tasks and their learned lambda,
evaluation tables, bfdkern version and git commit)."""

from __future__ import annotations

from bfdkern.commands.options import run_command

HELP = "export a finished run as a shareable folder: config.json + model.safetensors + a model card README.md"


def add_arguments(parser) -> None:
    """Declare the command's options on ``parser`` (no torch import: `--help` stays fast)."""
    parser.add_argument("run", metavar="RUN", help="a finished pretraining run directory (holding encoder.pt)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (new or empty)")
    parser.add_argument(
        "--results",
        action="append",
        default=[],
        metavar="DIR",
        help="a `bfdkern evaluate --out` folder (or its results.json) to put in the model card; repeatable "
        "(those under RUN are found by themselves)",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")


def run(args) -> int:
    """Run the command; 0 on success, 2 on a bad input (the message names it)."""
    return run_command("export", lambda: _export(args))


def _export(args) -> int:
    from bfdkern.recipes.export import export_run

    done = export_run(args.run, args.output, results=args.results, overwrite=args.overwrite)
    for path in done.results:
        print(f"evaluation in the model card: {path}")
    print("wrote " + ", ".join(str(p) for p in done.files))
    print(f'load it with: BladesModel.from_pretrained("{done.folder}"), or --encoder {done.folder}')
    return 0
