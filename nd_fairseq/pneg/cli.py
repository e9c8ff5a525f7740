"""``nd-pneg``: prompt-based adversarial negatives (PNEG, Lee et al. 2022) and the ranking benchmark.

    nd-pneg prompt           --examples ddpp/train.jsonl --input data/train [--index 0]
    nd-pneg generate         --examples ddpp/train.jsonl --input data/train --output negs.jsonl \\
                             --base-url http://localhost:8000/v1 --model NAME
    nd-pneg filter           --input data/train --generated negs.jsonl --output negs.filtered.jsonl
    nd-pneg build-candidates --train ddpp/train.jsonl --valid ddpp/dev.jsonl --test ddpp/test.jsonl \\
                             --sources random,bm25,pneg,human --pneg negs.jsonl --out-dir cands
    nd-pneg rank-benchmark   --candidates cands --work-dir runs
    nd-pneg export-negatives --input data/train --generated negs.jsonl --output train.negatives.jsonl

Inputs (``--input``, ``--train`` ...) are DailyDialog++ JSON-lines files or the prefix of aligned
``.query``/``.response`` files (nd-prepare's output); ``--format`` overrides the detection.
The options are defined in :mod:`.options`; this module holds the commands and :func:`main`.
"""

import json
import logging
import os
import sys
from typing import Optional, Sequence

from ..io_utils import InputError, write_lines_atomic
from .data import load_examples
from .options import PROG, build_parser


# Commands -------------------------------------------------------------------------------------------


def _examples(args, path: Optional[str] = None):
    return load_examples(path or args.input, args.format, args.turn_separator or None)


def _pool(args):
    from .prompt import PromptConfig, demonstration_pool

    config = PromptConfig(instruction=args.instruction, k=args.k, seed=args.seed)
    if config.k == 0:
        return config, []
    if not args.examples:
        raise InputError("--examples is required for k > 0: a DailyDialog++ JSON-lines file with human "
                         "adversarial negatives (the demonstration pool)")
    pool = demonstration_pool(load_examples(args.examples, "dailydialog++"), config.instruction)
    if len(pool) < config.k:
        raise InputError(f"{args.examples} has {len(pool)} records with 5 adversarial negatives; --k {config.k} "
                         f"needs at least {config.k}")
    return config, pool


def _filter_config(args):
    from .parse import FilterConfig

    return FilterConfig(max_underscores=args.max_underscores, copy_ratio=args.copy_ratio,
                        check_context=not args.allow_context_copies, check_positive=not args.allow_positive_copies)


def cmd_prompt(args) -> int:
    from .prompt import make_prompt

    config, pool = _pool(args)
    examples = _examples(args)
    if not examples:
        raise InputError(f"{args.input} holds no examples")
    if args.output:
        rows = []
        for ex in examples:
            if not ex.context:
                continue
            prompt, demos = make_prompt(ex, pool, config)
            rows.append(json.dumps({"id": ex.id, "prompt": prompt, "demos": demos}, ensure_ascii=False))
        write_lines_atomic(args.output, rows)
        print(f"{len(rows)} prompts -> {args.output}", file=sys.stderr)
        return 0
    if args.id is not None:
        match = [ex for ex in examples if ex.id == args.id]
        if not match:
            raise InputError(f"{args.input} has no example with id {args.id!r}")
        ex = match[0]
    else:
        if not 0 <= args.index < len(examples):
            raise InputError(f"--index {args.index} is outside the {len(examples)} examples of {args.input}")
        ex = examples[args.index]
    prompt, _ = make_prompt(ex, pool, config)
    sys.stdout.write(prompt + "\n")
    return 0


def make_backend(args):
    from .backends import FairseqLMBackend, SamplingConfig, client_from_args

    sampling = SamplingConfig(temperature=args.temperature, frequency_penalty=args.frequency_penalty,
                              presence_penalty=args.presence_penalty, max_tokens=args.max_tokens)
    if args.backend == "openai":
        if not args.base_url:
            raise InputError("--base-url is required for --backend openai (e.g. http://localhost:8000/v1)")
        return client_from_args(args, sampling, send_seed=args.send_seed)
    if not args.lm_checkpoint:
        raise InputError("--lm-checkpoint is required for --backend fairseq-lm")
    return FairseqLMBackend(args.lm_checkpoint, data=args.lm_data, sampling=sampling, tokenizer=args.lm_tokenizer,
                            lowercase=args.lm_lowercase, sentencepiece_model=args.lm_sentencepiece_model)


def cmd_generate(args) -> int:
    from .generate import GenerationConfig, generate
    from .parse import format_counts

    if args.max_attempts < 1:
        raise InputError(f"--max-attempts must be >= 1, got {args.max_attempts}")
    if not args.interrupt_grace >= 0:
        raise InputError(f"--interrupt-grace must be >= 0 seconds, got {args.interrupt_grace}")
    config, pool = _pool(args)
    examples = _examples(args)
    backend = make_backend(args)
    gen = GenerationConfig(prompt=config, filter=_filter_config(args), max_attempts=args.max_attempts,
                           retry_failed=args.retry_failed, limit=args.limit, interrupt_grace=args.interrupt_grace)
    try:
        summary = generate(examples, pool, backend, args.output, gen, progress=not args.quiet)
    finally:
        backend.close()
    if not args.quiet:
        new, total = summary["new"], summary["total"]
        print(f"contexts: {summary['targets']} (already done: {summary['already_done']}, left: {summary['remaining']})")
        print(f"this run: ok {new['ok']}, failed {new['failed']}, attempts {new['attempts']}; "
              f"rejected attempts by reason: {format_counts(new['rejected_attempts_by_reason'])}")
        print(f"all: ok {total['ok']}, failed {total['failed']} -> {args.output}")
    return 0


def cmd_filter(args) -> int:
    from collections import Counter

    from .generate import read_results, refilter, summarize
    from .parse import format_counts

    records = read_results(args.generated)
    instruction = args.instruction or _meta_instruction(args.generated) or "dir"
    out = refilter(records, _examples(args), instruction, _filter_config(args))
    write_lines_atomic(args.output, [json.dumps(r, ensure_ascii=False) for r in out])
    if not args.quiet:
        reasons: Counter = Counter()
        for r in out:
            reasons.update(r.get("filter_reasons") or {})
        s = summarize(out)
        print(f"records: {len(out)}; ok {s['ok']}, rejected/failed {s['failed']}")
        print(f"rejected items by reason: {format_counts(reasons)} -> {args.output}")
    return 0


def _meta_instruction(path: str) -> Optional[str]:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    try:
        return json.loads(first).get("meta", {}).get("instruction")
    except (ValueError, AttributeError):
        return None


def cmd_build_candidates(args) -> int:
    from .candidates import (SOURCES, build_eval_sets, build_training_sets, build_valid_sets, carve_validation,
                             covered, pneg_negatives, write_candidates)
    from .generate import read_results
    from ..io_utils import AtomicFiles

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise InputError(f"unknown source {bad[0]!r} in --sources: use {', '.join(SOURCES)}")
    if "pneg" in sources and not args.pneg:
        raise InputError("--sources includes pneg: give --pneg RESULTS (the output of nd-pneg generate)")
    if args.valid and args.valid_fraction is not None:
        raise InputError("give either --valid (a validation file) or --valid-fraction (carved from --train), not both")
    if args.valid_fraction is not None and not 0.0 < args.valid_fraction < 1.0:
        raise InputError(f"--valid-fraction must be between 0 and 1 (exclusive), got {args.valid_fraction:g}")
    valid_pneg_needed = bool(args.valid) and "pneg" in sources and args.valid_protocol == "source"
    if valid_pneg_needed and not args.valid_pneg:
        raise InputError("source 'pneg' validated on its own negatives needs --valid-pneg RESULTS (nd-pneg generate "
                         "run on --valid), or use --valid-fraction, or --valid-protocol random")
    pneg = pneg_negatives(read_results(args.pneg)) if "pneg" in sources else None
    train = _examples(args, args.train)
    if "human" in sources and not any(len(ex.adversarial) >= 5 for ex in train):
        raise InputError(f"{args.train} has no human adversarial negatives; drop 'human' from --sources")
    valid_examples, valid_from, valid_pneg = None, None, pneg
    if args.valid_fraction is not None:
        common = not args.all_contexts
        train, valid_examples = carve_validation(
            train, args.valid_fraction, args.seed,
            (lambda ex: covered(ex, sources, pneg)) if common else (lambda ex: covered(ex, (), None)))
        valid_from = f"{args.valid_fraction:g} of the contexts of {args.train} (seed {args.seed})"
    elif args.valid:
        valid_examples = _examples(args, args.valid)
        valid_from = str(args.valid)
        valid_pneg = pneg_negatives(read_results(args.valid_pneg)) if valid_pneg_needed else None
    sets = build_training_sets(train, sources, args.seed, pneg, args.bm25_exclude_context,
                               common=not args.all_contexts, positive=args.positive)
    tests = build_eval_sets(_examples(args, args.test), args.seed, args.adversarial_test, "test", args.positive)
    valid = None
    if valid_examples is not None:
        valid = build_valid_sets(valid_examples, sources, args.seed, args.valid_protocol, valid_pneg,
                                 args.bm25_exclude_context, not args.all_contexts, args.positive)
        thin = [s for s in sources if not valid[s]]
        if thin:
            raise InputError(f"the validation split ({valid_from}) has no context with five '{thin[0]}' negatives; "
                             f"give more validation data" + (" or --valid-protocol random" if thin[0] != "random" else ""))
    empty = [s for s in sources if not sets[s]]
    if empty:
        raise InputError(f"no training context has five '{empty[0]}' negatives"
                         + (" (check that --pneg was generated for --train)" if empty[0] == "pneg" else ""))
    summary = {"train": {s: len(v) for s, v in sets.items()}, "test": {k: len(v) for k, v in tests.items()},
               "valid": {s: len(v) for s, v in valid.items()} if valid is not None else {},
               "valid_protocol": args.valid_protocol if valid is not None else "none",
               "valid_from": valid_from, "positive": args.positive, "seed": args.seed}
    os.makedirs(args.out_dir, exist_ok=True)
    # validation files of an earlier build (or an older version's shared valid.jsonl) must not be mixed in
    for stale in ["valid.jsonl"] + [f"valid.{s}.jsonl" for s in SOURCES if s not in (valid or {})]:
        if os.path.exists(os.path.join(args.out_dir, stale)):
            os.remove(os.path.join(args.out_dir, stale))
    for s, v in sets.items():
        write_candidates(os.path.join(args.out_dir, f"train.{s}.jsonl"), v)
    for k, v in tests.items():
        write_candidates(os.path.join(args.out_dir, f"test.{k}.jsonl"), v)
    for s, v in (valid or {}).items():
        write_candidates(os.path.join(args.out_dir, f"valid.{s}.jsonl"), v)
    with AtomicFiles(args.out_dir) as out:
        json.dump(summary, out.open("summary.json"), indent=2)
    print(f"training contexts per source: {summary['train']}; valid ({summary['valid_protocol']}): "
          f"{summary['valid']}; test: {summary['test']} -> {args.out_dir}")
    return 0


def cmd_rank_benchmark(args) -> int:
    import shlex

    from .benchmark import format_report, run_benchmark
    from .ranker import RankerConfig

    if args.patience < 0:
        raise InputError(f"--patience must be >= 0 (0: no early stopping), got {args.patience}")

    cfg = RankerConfig(
        encoder_layers=args.encoder_layers, encoder_embed_dim=args.encoder_embed_dim,
        encoder_ffn_embed_dim=args.encoder_ffn_embed_dim, encoder_attention_heads=args.encoder_attention_heads,
        max_positions=args.max_positions, max_option_length=args.max_option_length,
        max_context_turns=args.max_context_turns, dropout=args.dropout, lr=args.lr, warmup_updates=args.warmup_updates,
        batch_size=args.batch_size, max_epoch=args.max_epoch, max_update=args.max_update, seed=args.seed,
        validate=not args.no_valid, patience=args.patience, extra_args=shlex.split(args.fairseq_args))
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    results = run_benchmark(args.candidates, args.work_dir, sources, cfg, progress=not args.quiet, jobs=args.jobs)
    print(format_report(results))
    print(f"-> {os.path.join(args.work_dir, 'report.json')}, report.md")
    return 0


def cmd_export(args) -> int:
    from .export import export_negatives
    from .generate import read_results

    stats = export_negatives(_examples(args), read_results(args.generated), args.output, args.require_all)
    print(f"{stats['lines']} lines ({stats['with_negatives']} with negatives, {stats['empty']} empty) -> {args.output}")
    return 0


COMMANDS = {"prompt": cmd_prompt, "generate": cmd_generate, "filter": cmd_filter,
            "build-candidates": cmd_build_candidates, "rank-benchmark": cmd_rank_benchmark,
            "export-negatives": cmd_export}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        detail = f" ({err})" if str(err) else ""
        print(f"{PROG}: interrupted; finished records are saved{detail}, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
