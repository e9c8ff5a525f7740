#!/usr/bin/env python
"""Paired bootstrap over test sentences: how sure is "BLEU-4 of B is within X% of A's"?

    python examples/chitchat/paired_bootstrap.py --out results/chitchat --a standard --b nd_a03 \\
        --seeds 1 2 3 --mode greedy
    python examples/chitchat/paired_bootstrap.py --out work/chitchat --b nd_a0.3_noeos --mode beam5

Reads the generations of two systems on the same test queries, made by the experiment runner
(``OUT/generate/{system}.s{seed}.{mode}.txt``) or by examples/pipeline.sh (``WORK/generate/
{system}.s{seed}.{mode}.{subset}.txt``), scores every sentence with nd-eval's smoothed sentence
BLEU-4, and resamples the test
sentences (the same resampled indices for both systems and every seed, so the comparison stays
paired). It prints the ratio of the seed-averaged mean BLEU-4 (B / A), its 95% interval over the
resamples, and the share of resamples where the ratio is at least ``1 - --margin``. The seeds'
own spread is not resampled: the runner's tables show it. Also printed per seed: the number of
generated low-frequency tokens behind each LF figure (LF is a share of a few ten thousand tokens),
and the two factors of BLEU-4: sentence BLEU-4 is the brevity penalty exp(1 - |r|/|h|) (1 when the
reply is at least as long as the reference) times the smoothed n-gram precisions, so a system whose
replies are shorter loses BLEU-4 to the penalty alone. The same bootstrap is run on the precisions
without the penalty: where the two ratios differ, length is the difference.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# the bootstrap itself (the recipe prints the same intervals under its verdict lines)
from nd_fairseq.evaluation.bootstrap import bootstrap_ratio, sentence_bleu4, without_brevity_penalty  # noqa: E402

# the runner's naming of generate outputs (importing it puts examples/ on the path), then the recipe's
from experiment_jobs import generation_file  # noqa: E402
from runs import recipe_generation_file  # noqa: E402


def sentence_scores(path: Path, counts) -> Tuple[List[float], List[float], int, int]:
    """Sentence BLEU-4 and brevity penalty of every response in a generate output, and
    (low-frequency tokens, tokens)."""
    from nd_fairseq.evaluation import read_responses
    from nd_fairseq.evaluation.metrics import low_frequency_count, tokenize

    resp = read_responses(str(path))
    scores, penalties = sentence_bleu4(resp.hypotheses, resp.references)
    low, tokens = low_frequency_count([tokenize(h) for h in resp.hypotheses], counts)
    return scores, penalties, low, tokens


def generation_path(gen: Path, name: str, mode: str, subset: str) -> Path:
    """The recipe's output name where it exists, else the experiment runner's."""
    recipe = recipe_generation_file(gen, name, mode, subset)
    return recipe if recipe.exists() else generation_file(gen, name, mode, subset)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the runner's --out or the recipe's --work directory")
    p.add_argument("--a", default="standard")
    p.add_argument("--b", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--mode", choices=["greedy", "beam5"], default="greedy")
    p.add_argument("--subset", choices=["test", "valid"], default="test")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--margin", type=float, default=0.10)
    args = p.parse_args(argv)
    from nd_fairseq.evaluation import read_train_counts

    out = Path(args.out)
    counts = read_train_counts(str(out / "text" / "train.response"))
    rows = {args.a: [], args.b: []}
    precisions = {args.a: [], args.b: []}
    for system in rows:
        for seed in args.seeds:
            path = generation_path(out / "generate", f"{system}.s{seed}", args.mode, args.subset)
            if not path.exists():
                p.error(f"{path} not found: run the runner or the recipe for {system} seed {seed} first")
            scores, penalties, low, tokens = sentence_scores(path, counts)
            rows[system].append(scores)
            precisions[system].append(without_brevity_penalty(scores, penalties))
            print(f"{system} seed {seed}: BLEU-4 {np.mean(scores):.4f}, brevity penalty {np.mean(penalties):.3f}, "
                  f"without it {np.mean(precisions[system][-1]):.4f}; LF {low}/{tokens} tokens")
    for what, table in (("BLEU-4", rows), ("BLEU-4 without the brevity penalty", precisions)):
        ratio, low, high, share = bootstrap_ratio(table[args.a], table[args.b], args.samples, margin=args.margin)
        print(f"{what} {args.b} / {args.a} ({args.mode}, {args.subset}, seeds {args.seeds}): ×{ratio:.3f}, "
              f"95% interval over {args.samples} paired resamples of the sentences [{low:.3f}, {high:.3f}]; "
              f"ratio >= {1 - args.margin:.2f} in {share:.1%} of resamples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
