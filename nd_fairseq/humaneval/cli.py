"""``nd-humaneval``: blind A/B human evaluation of dialogue systems (the paper's Table 4).

    nd-humaneval create --system nd=nd.txt --system standard=std.txt --queries test.query \\
                        --n 50 --seed 1 --criteria informativeness,relevance,fluency --db study.sqlite
    nd-humaneval serve study.sqlite --port 8765          # annotators open http://127.0.0.1:8765/
    nd-humaneval report study.sqlite                     # study.report.{md,json,png}
    nd-humaneval judge study.sqlite --base-url http://127.0.0.1:8000/v1 --model NAME
    nd-humaneval export study.sqlite --output judgments.csv
    nd-humaneval import study.sqlite --input judgments.csv

Importing this module imports neither fairseq nor torch.
"""

import argparse
import os
import sys
from typing import List, Optional

from ..evaluation.readers import FORMATS, HYPOTHESIS_FIELDS, SUBWORD_MODES
from ..io_utils import InputError
from ..pneg.backends import add_client_options

PROG = "nd-humaneval"


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Blind A/B human evaluation of dialogue responses: build a "
                                "study, annotate it in a browser, report win/tie/lose and Fleiss' kappa "
                                "(Table 4 of Negative Distillation), optionally with an LLM judge.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("create", help="sample queries and build a study file from two or more system outputs")
    s.add_argument("--system", action="append", default=[], metavar="NAME=FILE",
                   help="a system's output: fairseq-generate output or plain text, one response per line (repeat; "
                        "the first is compared with each of the others, see --pairs)")
    s.add_argument("--queries", required=True, help="the test queries, one per line (e.g. test.query)")
    s.add_argument("--n", type=_int, default=50, help="how many test queries to sample (default 50, as the paper)")
    s.add_argument("--seed", type=_int, default=1, help="seed of the sample and of the left/right sides (default 1)")
    s.add_argument("--criteria", default="informativeness,relevance,fluency",
                   help="comma-separated criteria (default: the paper's informativeness,relevance,fluency)")
    s.add_argument("--define", action="append", default=[], metavar="NAME=DEFINITION",
                   help="definition shown to annotators for a criterion of your own")
    s.add_argument("--pairs", default="first", choices=("first", "all"),
                   help="first: the first system against each other one (Table 4, default); all: every pair")
    s.add_argument("--db", required=True, help="the study file to create (SQLite; must not exist)")
    s.add_argument("--format", default="auto", choices=FORMATS, help="format of the system files (default auto)")
    s.add_argument("--hyp-field", default="H", choices=HYPOTHESIS_FIELDS,
                   help="generate output line to show: H (default) or D (detokenised)")
    s.add_argument("--subwords", default="auto", choices=SUBWORD_MODES, help="undo subword units (default auto)")

    s = sub.add_parser("serve", help="the annotation web page")
    s.add_argument("study", help="study file written by create")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for a LAN)")
    s.add_argument("--port", type=_int, default=8765, help="port (default 8765; 0: any free port)")
    s.add_argument("--annotators", default=None,
                   help="comma-separated names allowed to annotate (default: anyone who enters a name)")

    s = sub.add_parser("report", help="win / tie / lose %%, Fleiss' kappa, judge agreement: Markdown, JSON, PNG")
    s.add_argument("study", help="study file")
    s.add_argument("--output", default=None, metavar="PREFIX",
                   help="write PREFIX.md, PREFIX.json, PREFIX.png (default: the study file's name + .report)")
    s.add_argument("--quiet", action="store_true", help="do not print the Markdown")

    s = sub.add_parser("judge", help="an LLM on an OpenAI-compatible /v1/completions endpoint as annotator llm:NAME")
    s.add_argument("study", help="study file")
    add_client_options(s, required=True)
    s.add_argument("--name", default=None, help="annotator name after llm: (default: --model)")
    s.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    s.add_argument("--max-tokens", type=_int, default=64, help="answer length limit (default 64)")
    s.add_argument("--seed", type=_int, default=0, help="seed of the order asked first (default 0)")
    s.add_argument("--limit", type=_int, default=None, help="ask at most N questions in this run")
    s.add_argument("--quiet", action="store_true", help="no progress or summary")

    s = sub.add_parser("export", help="judgments (or one annotator's blinded sheet) as CSV or JSON")
    s.add_argument("study", help="study file")
    s.add_argument("--output", required=True, help="file to write (.csv or .json)")
    s.add_argument("--format", default=None, choices=("csv", "json"), help="default: from --output's extension")
    s.add_argument("--sheet", default=None, metavar="ANNOTATOR",
                   help="write ANNOTATOR's task sheet (blinded, their order and sides) to fill in and import")

    s = sub.add_parser("import", help="judgments or filled sheets from CSV or JSON (all rows or none)")
    s.add_argument("study", help="study file")
    s.add_argument("--input", required=True, help="file written by export (judgments or a filled sheet)")
    s.add_argument("--format", default=None, choices=("csv", "json"), help="default: from --input's extension")
    s.add_argument("--annotator", default=None, help="annotator of a sheet without an annotator column")
    s.add_argument("--replace", action="store_true", help="let the file's judgments replace different stored ones")
    return p


def default_prefix(study: str) -> str:
    root, ext = os.path.splitext(study)
    return (root if ext in (".sqlite", ".db", ".sqlite3") else study) + ".report"


def cmd_create(args) -> int:
    from .study import build_study

    info = build_study(args.db, args.system, args.queries, args.n, args.seed, args.criteria, args.define,
                       args.pairs, args.format, args.hyp_field, args.subwords)
    pairs = ", ".join(f"{a} vs {b}" for a, b in info["pairs"])
    print(f"{PROG}: wrote {args.db}: {info['items']} items ({info['queries']} queries x {pairs}); criteria "
          f"{', '.join(info['criteria'])}" + (f"; {info['identical']} items have identical responses"
                                              if info["identical"] else ""))
    print(f"{PROG}: next: {PROG} serve {args.db}")
    return 0


def cmd_serve(args) -> int:
    from .server import serve

    names = [n.strip() for n in args.annotators.split(",") if n.strip()] if args.annotators else None
    serve(args.study, args.host, args.port, names)
    return 0


def cmd_report(args) -> int:
    from . import store
    from .report import format_markdown, summarize, write_report

    with store.Study(args.study) as st:
        paths = write_report(st, args.output or default_prefix(args.study))
        if not args.quiet:
            print(format_markdown(summarize(st)))
    if not args.quiet:
        print(f"{PROG}: wrote {paths['markdown']}, {paths['json']}, {paths['chart']}")
    return 0


def cmd_judge(args) -> int:
    from ..pneg.backends import SamplingConfig, client_from_args
    from . import store
    from .judge import judge_study

    name = args.name or args.model
    if not name or any(c.isspace() for c in name):
        raise InputError(f"--name {name!r}: give the judge a name without spaces (it is stored as llm:NAME)")
    backend = client_from_args(args, SamplingConfig(temperature=args.temperature, frequency_penalty=0.0,
                                                    presence_penalty=0.0, max_tokens=args.max_tokens))

    def progress(done, total):
        if not args.quiet:
            print(f"\r{PROG}: judge {done} / {total} questions", end="", file=sys.stderr, flush=True)

    with store.Study(args.study) as st:
        try:
            summary = judge_study(st, backend, name, seed=args.seed, limit=args.limit, progress=progress)
        finally:
            if not args.quiet:
                print(file=sys.stderr)
    if not args.quiet:
        print(f"{PROG}: llm:{name}: asked {summary.asked} questions ({summary.skipped} answered before), "
              f"{summary.stored} judgments stored, {summary.failed_answers} criterion answers unreadable "
              f"(recorded as failed; rerun to ask again)")
    return 0


def cmd_export(args) -> int:
    from . import store
    from .exchange import export_judgments, export_sheet

    with store.Study(args.study) as st:
        if args.sheet:
            n = export_sheet(st, args.sheet, args.output, args.format)
            print(f"{PROG}: wrote {args.output}: {n} items for {args.sheet} (fill the criterion columns with "
                  f"left, right or tie, then {PROG} import {args.study} --input {args.output})")
        else:
            n = export_judgments(st, args.output, args.format)
            print(f"{PROG}: wrote {args.output}: {n} judgments")
    return 0


def cmd_import(args) -> int:
    from . import store
    from .exchange import import_file

    with store.Study(args.study) as st:
        counts = import_file(st, args.input, args.format, args.annotator, args.replace)
    print(f"{PROG}: {args.input}: {counts['stored']} judgments stored, {counts['unchanged']} already there"
          + (f", {counts['blank']} blank cells skipped" if counts["blank"] else ""))
    return 0


COMMANDS = {"create": cmd_create, "serve": cmd_serve, "report": cmd_report, "judge": cmd_judge,
            "export": cmd_export, "import": cmd_import}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        name = err.filename if err.filename is not None else "a file"
        print(f"{PROG}: error: cannot access {name}: {err.strerror or err}; check the path and its permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; everything answered so far is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
