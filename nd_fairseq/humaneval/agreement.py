"""Agreement statistics: Fleiss' kappa (Fleiss 1971) and a majority vote.

Fleiss' kappa compares how often raters agree on an item with how often they would by chance. For
N items, each rated by n_i raters into k categories with n_ij raters choosing category j:

    P_i   = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1))      agreement on item i
    p_j   = sum_i n_ij / sum_i n_i                       share of category j
    kappa = (mean_i P_i - sum_j p_j^2) / (1 - sum_j p_j^2)

With the same number of raters on every item this is Fleiss' statistic exactly; items with fewer
than two ratings carry no agreement and are left out, and items with a different number of raters
are allowed (each P_i is that item's own pairwise agreement), so an annotator who stopped halfway
does not remove the items the others judged.
"""

from collections import Counter
from typing import Dict, Hashable, Iterable, List, Optional, Sequence


def fleiss_kappa(table: Sequence[Sequence[int]]) -> Optional[float]:
    """Kappa of a count table (rows: items, columns: categories); None when undefined.

    Undefined: no item with two ratings, or every rating in one category (chance agreement is 1).
    """
    rows = [list(map(int, r)) for r in table if sum(r) >= 2]
    if not rows:
        return None
    if any(c < 0 for r in rows for c in r):
        raise ValueError("counts must be >= 0")
    agreement = [sum(c * (c - 1) for c in r) / (sum(r) * (sum(r) - 1)) for r in rows]
    total = sum(sum(r) for r in rows)
    shares = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    chance = sum(p * p for p in shares)
    if chance >= 1.0:
        return None
    return (sum(agreement) / len(agreement) - chance) / (1.0 - chance)


def count_table(ratings: Dict[Hashable, Iterable[str]], categories: Sequence[str]) -> List[List[int]]:
    """Per item, how many raters chose each category (categories in the given order)."""
    out = []
    for votes in ratings.values():
        counts = Counter(votes)
        unknown = set(counts) - set(categories)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}")
        out.append([counts.get(c, 0) for c in categories])
    return out


def majority(votes: Iterable[str]) -> Optional[str]:
    """The label more than half the votes chose, or None (no strict majority)."""
    counts = Counter(votes)
    total = sum(counts.values())
    if not total:
        return None
    label, n = counts.most_common(1)[0]
    return label if 2 * n > total else None
