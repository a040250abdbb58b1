"""Symmetrisation of two directional word alignments (Och & Ney, 2003; Koehn et al., 2003).

An IBM model links each target word to at most one source word, so the source→target and
target→source Viterbi alignments are each one-sided. Their intersection is precise, their union
has high recall; grow-diag starts from the intersection and adds union points that neighbour an
existing point (diagonals included) and cover a word not yet aligned, and the ``final`` step then
adds the remaining union points of either direction whose source *or* target word is unaligned
(``final-and``: whose source *and* target words both are). This follows the pseudo-code of
Koehn's "grow-diag-final" as published with Moses, visiting points in (source, target) order.
Points are (source index, target index) pairs, 0-based (Pharaoh's ``i-j``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..core.validate import check_choice

SYMMETRIZATIONS = ("intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and")
NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))

Points = set[tuple[int, int]]


def symmetrize(forward: Iterable[tuple[int, int]], backward: Iterable[tuple[int, int]], source_length: int,
               target_length: int, method: str = "grow-diag-final") -> list[tuple[int, int]]:
    """Combine the source→target (``forward``) and target→source (``backward``) alignments of one
    sentence pair, both given as (source index, target index) points; the result is sorted."""
    check_choice("symmetrization", method, SYMMETRIZATIONS)
    forward, backward = set(forward), set(backward)
    union = forward | backward
    if method == "intersection":
        return sorted(forward & backward)
    if method == "union":
        return sorted(union)
    alignment = forward & backward
    aligned_source = {i for i, _ in alignment}
    aligned_target = {j for _, j in alignment}

    def add(i: int, j: int) -> None:
        alignment.add((i, j))
        aligned_source.add(i)
        aligned_target.add(j)

    grown = True
    while grown:  # GROW-DIAG: until no point was added in a whole sweep
        grown = False
        for i in range(source_length):
            for j in range(target_length):
                if (i, j) not in alignment:
                    continue
                for di, dj in NEIGHBOURS:
                    ni, nj = i + di, j + dj
                    if (ni not in aligned_source or nj not in aligned_target) and (ni, nj) in union \
                            and (ni, nj) not in alignment:
                        add(ni, nj)
                        grown = True
    if method == "grow-diag":
        return sorted(alignment)
    both_unaligned = method == "grow-diag-final-and"
    for direction in (forward, backward):  # FINAL(e2f), then FINAL(f2e)
        for i in range(source_length):
            for j in range(target_length):
                if (i, j) not in direction or (i, j) in alignment:
                    continue
                free_i, free_j = i not in aligned_source, j not in aligned_target
                if (free_i and free_j) if both_unaligned else (free_i or free_j):
                    add(i, j)
    return sorted(alignment)
