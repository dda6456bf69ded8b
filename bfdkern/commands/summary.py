"""`bfdkern summary MANIFEST [--plot PNG]`: per EXIF tag, how often it is present and usable, its
distinct values and examples, and why labels are missing; optionally a coverage bar plot."""

from __future__ import annotations

from bfdkern.commands.options import run_command

HELP = "print the EXIF tag coverage of a manifest (frequency, unique values, examples) and plot it"


def add_arguments(parser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="SQLite manifest made by `bfdkern index`")
    parser.add_argument("--plot", metavar="PNG", help="write a coverage bar plot to this PNG file")
    parser.add_argument("--examples", type=int, default=4, help="commonest values shown per tag")


def run(args) -> int:
    return run_command("summary", lambda: _summary(args))


def _summary(args) -> int:
    from bfdkern.exif.summary import format_table, plot_coverage, summarize

    summary = summarize(args.manifest, examples=args.examples)
    print(format_table(summary))
    if args.plot:
        plot_coverage(summary, args.plot)
        print(f"coverage plot: {args.plot}")
    return 0
