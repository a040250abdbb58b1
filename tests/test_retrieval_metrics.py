"""IR metrics: hand-computed values, trec_eval's tie order, and parity with pytrec_eval."""

import math
import random

import pytest

from lmlab.core.errors import DataError
from lmlab.retrieval.metrics import evaluate_run, ranked


def test_hand_computed_metrics():
    run = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    qrels = {"q": {"b": 1, "c": 2, "z": 1}}
    m = evaluate_run(run, qrels, ("ndcg@3", "recall@2", "mrr@10", "map@10", "mrr@1"))
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx(dcg / idcg)
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["mrr@10"] == pytest.approx(1 / 2) and m["mrr@1"] == 0.0
    assert m["map@10"] == pytest.approx((1 / 2 + 2 / 3) / 3)


def test_ties_break_by_doc_id_descending_and_missing_queries_score_zero():
    assert ranked({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]
    m = evaluate_run({"q1": {"d": 1.0}}, {"q1": {"d": 1}, "q2": {"e": 1}, "q3": {"f": 0}}, ("mrr@10",))
    assert m["mrr@10"] == 0.5  # q2 is judged but not run; q3 has no relevant document
    with pytest.raises(DataError, match="measure"):
        evaluate_run({}, {"q": {"d": 1}}, ("p@5",))


def test_parity_with_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(60)]
    qrels = {f"q{q}": {d: rng.choice([1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 8))} for q in range(40)}
    run = {q: {d: float(rng.randint(0, 20)) for d in rng.sample(docs, 50)} for q in qrels}  # many ties
    ours = evaluate_run(run, qrels, ("ndcg@10", "recall@20", "mrr@1000", "map@1000", "ndcg@1000"), per_query=True)
    peer = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.20", "recip_rank", "map", "ndcg"}).evaluate(run)
    names = {"ndcg@10": "ndcg_cut_10", "recall@20": "recall_20", "mrr@1000": "recip_rank", "map@1000": "map",
             "ndcg@1000": "ndcg"}
    for ours_name, peer_name in names.items():
        for q in qrels:
            assert ours["per_query"][ours_name][q] == pytest.approx(peer[q][peer_name], abs=1e-9), (ours_name, q)
