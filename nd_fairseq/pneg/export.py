"""Export generated negatives aligned with a training set, for the Negative Distillation side.

Line i of the output is a JSON list of the negatives generated for training example i (pair i of
``train.query``/``train.response``, or record i of a DailyDialog++ file): ``[]`` where none were
generated or generation failed. The file has exactly as many lines as the training set.
"""

import json
from typing import Dict, List, Sequence

from ..io_utils import InputError, write_lines_atomic
from .data import Example


def aligned_negatives(examples: Sequence[Example], records: Dict[str, dict], require_all: bool = False) -> List[List[str]]:
    out: List[List[str]] = []
    missing = []
    for ex in examples:
        rec = records.get(ex.id)
        if rec is not None and rec.get("status") == "ok":
            out.append([str(n) for n in rec.get("negatives") or []])
        else:
            out.append([])
            missing.append(ex.id)
    if require_all and missing:
        raise InputError(f"{len(missing)} of {len(examples)} training examples have no generated negatives "
                         f"(first: id {missing[0]}); finish nd-pneg generate or drop --require-all")
    return out


def export_negatives(examples: Sequence[Example], records: Dict[str, dict], output: str,
                     require_all: bool = False) -> Dict[str, int]:
    rows = aligned_negatives(examples, records, require_all)
    write_lines_atomic(output, [json.dumps(r, ensure_ascii=False) for r in rows])
    with_negs = sum(1 for r in rows if r)
    return {"lines": len(rows), "with_negatives": with_negs, "empty": len(rows) - with_negs}
