"""PNEG prompts (Lee et al., 2022, §2.1-2.2, Appendix G and I).

A prompt is ``k`` demonstrations followed by the target, each a block::

    ###
    Dialogue context:
    \"\"\"
    A: first turn
    B: second turn
    \"\"\"
    Create five irrelevant responses containing keywords of the given dialogue context:
    1. negative
    ...
    5. negative

The target block ends after ``1.``, so the model continues with the first negative and is stopped
at the next ``###`` (the separator). The demonstrations are DailyDialog++ contexts with their five
human-written adversarial negatives, drawn uniformly without replacement (§2.1, k = 2 is the
paper's best, Table 4) by a generator seeded with (seed, target id): a target's prompt does not
depend on which other targets are generated, in what order, or on a resumed run.

Instruction variants (Appendix I, Table 6):

* ``dir`` (I_dir, the PNEG default): the block above.
* ``pos`` (I_pos): ``Relevant response: <a positive response>`` between the context and the
  instruction, in the demonstrations (their first positive) and in the target (its first positive).
* ``imp`` (I_imp, zero-shot): no demonstrations and no list; the prompt ends with
  ``Suddenly, B makes an awkward response. ...`` and ``B:`` (the speaker after the last turn), and
  each completion is one negative (five are sampled).

The PDF text of Appendix G shows every line as its own paragraph and elides the demonstration
negatives with "..."; we read it as one line per element, with no blank lines.
"""

import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..io_utils import InputError
from .data import Example

SEPARATOR = "###"
N_NEGATIVES = 5
CONTEXT_HEADER = "Dialogue context:"
QUOTES = '"""'
INSTRUCTION_DIR = "Create five irrelevant responses containing keywords of the given dialogue context:"
RELEVANT_PREFIX = "Relevant response:"
INSTRUCTION_IMP = ("Suddenly, {speaker} makes an awkward response. The response appears to be okay at "
                   "first glance, but it's irrelevant to the conversation.")
INSTRUCTIONS = ("dir", "pos", "imp")
DEFAULT_K = {"dir": 2, "pos": 2, "imp": 0}


def speaker(turn_index: int) -> str:
    """Speakers alternate A, B, A, ... from the first turn of the context."""
    return "A" if turn_index % 2 == 0 else "B"


def next_speaker(context: Sequence[str]) -> str:
    return speaker(len(context))


def context_lines(context: Sequence[str]) -> List[str]:
    return [CONTEXT_HEADER, QUOTES] + [f"{speaker(i)}: {turn}" for i, turn in enumerate(context)] + [QUOTES]


def format_block(context: Sequence[str], instruction: str = "dir", negatives: Optional[Sequence[str]] = None,
                 relevant: Optional[str] = None) -> str:
    """One block of the prompt (without a trailing newline).

    With ``negatives`` (a demonstration) the five are listed; without (the target) the block ends
    with ``1.`` for I_dir/I_pos, or ``B:``/``A:`` for I_imp.
    """
    if instruction not in INSTRUCTIONS:
        raise InputError(f"unknown instruction {instruction!r}: use one of {', '.join(INSTRUCTIONS)}")
    if not context:
        raise InputError("a PNEG prompt needs a non-empty dialogue context")
    lines = [SEPARATOR] + context_lines(context)
    if instruction == "imp":
        who = next_speaker(context)
        lines += [INSTRUCTION_IMP.format(speaker=who), f"{who}:"]
        return "\n".join(lines)
    if instruction == "pos":
        if not relevant:
            raise InputError("instruction 'pos' (I_pos) needs a positive response for every context")
        lines.append(f"{RELEVANT_PREFIX} {relevant}")
    lines.append(INSTRUCTION_DIR)
    if negatives is None:
        lines.append("1.")
    else:
        if len(negatives) < N_NEGATIVES:
            raise InputError(f"a demonstration needs {N_NEGATIVES} negatives, got {len(negatives)}")
        lines += [f"{i}. {neg}" for i, neg in enumerate(negatives[:N_NEGATIVES], 1)]
    return "\n".join(lines)


def build_prompt(target: Example, demonstrations: Sequence[Example], instruction: str = "dir") -> str:
    """The full prompt: demonstration blocks (with their adversarial negatives), then the target."""
    if instruction == "imp" and demonstrations:
        raise InputError("instruction 'imp' (I_imp) is zero-shot; use --k 0")
    blocks = [format_block(d.context, instruction, negatives=d.adversarial,
                           relevant=d.positives[0] if d.positives else None) for d in demonstrations]
    blocks.append(format_block(target.context, instruction,
                               relevant=target.positives[0] if target.positives else None))
    return "\n".join(blocks)


def is_demonstration(example: Example, instruction: str = "dir") -> bool:
    """Usable as a demonstration: five human adversarial negatives (and a positive for I_pos)."""
    return (len(example.adversarial) >= N_NEGATIVES and bool(example.context)
            and (instruction != "pos" or bool(example.positives)))


def demonstration_pool(examples: Sequence[Example], instruction: str = "dir") -> List[Example]:
    return [ex for ex in examples if is_demonstration(ex, instruction)]


def _context_key(context: Sequence[str]) -> Tuple[str, ...]:
    return tuple(" ".join(t.lower().split()) for t in context)


def example_rng(seed: int, example_id: str, purpose: str = "demos") -> random.Random:
    # str seeds go through SHA-512 in CPython: stable across runs and PYTHONHASHSEED
    return random.Random(f"pneg\x1f{purpose}\x1f{seed}\x1f{example_id}")


def sample_demonstrations(pool: Sequence[Example], k: int, rng: random.Random,
                          target: Optional[Example] = None) -> List[Example]:
    """``k`` distinct pool examples drawn uniformly, never one with the target's own context."""
    if k <= 0:
        return []
    banned = _context_key(target.context) if target is not None else None
    if len(pool) <= 4 * k:  # small pool: count exactly rather than fail after many draws
        eligible = sum(banned is None or _context_key(p.context) != banned for p in pool)
    else:
        eligible = len(pool)
    if eligible < k:
        raise InputError(f"the demonstration pool has {eligible} usable examples but k = {k}; give a "
                         f"larger --examples file (DailyDialog++ records with 5 adversarial negatives) "
                         f"or a smaller --k")
    chosen: List[int] = []
    tries = 0
    while len(chosen) < k:
        tries += 1
        if tries > 1000 * k:
            raise InputError(f"could not draw {k} demonstrations different from the target's context; "
                             f"give a larger --examples file")
        i = rng.randrange(len(pool))
        if i in chosen or (banned is not None and _context_key(pool[i].context) == banned):
            continue
        chosen.append(i)
    return [pool[i] for i in chosen]


@dataclass
class PromptConfig:
    instruction: str = "dir"
    k: Optional[int] = None  # None: 2 for dir/pos, 0 for imp
    seed: int = 1

    def __post_init__(self):
        if self.instruction not in INSTRUCTIONS:
            raise InputError(f"unknown --instruction {self.instruction!r}: use one of {', '.join(INSTRUCTIONS)}")
        if self.k is None:
            self.k = DEFAULT_K[self.instruction]
        if self.k < 0:
            raise InputError(f"--k must be >= 0, got {self.k}")
        if self.instruction == "imp" and self.k:
            raise InputError("instruction 'imp' (I_imp) is zero-shot; use --k 0")


def make_prompt(target: Example, pool: Sequence[Example], config: PromptConfig) -> Tuple[str, List[str]]:
    """The prompt for ``target`` and the ids of its demonstrations (reproducible from the seed)."""
    demos = sample_demonstrations(pool, config.k, example_rng(config.seed, target.id), target)
    return build_prompt(target, demos, config.instruction), [d.id for d in demos]
