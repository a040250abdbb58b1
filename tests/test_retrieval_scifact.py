"""SciFact (BEIR test split): Lucene BM25 nDCG@10 within 0.01 of the published 0.665."""

import pytest

from lmlab.retrieval.evaluate import evaluate_beir
from tests.conftest import need_data


def test_scifact_bm25_matches_the_published_figure(no_progress):
    result = evaluate_beir(need_data("scifact"), "bm25")
    assert result["queries"] == 300
    assert result["ndcg@10"] == pytest.approx(0.665, abs=0.01)
    assert result["recall@100"] > 0.85


@pytest.mark.slow
def test_scifact_bm25_with_porter_stemming_approaches_anserini(no_progress):
    from lmlab.analysis.analyzer import Analyzer
    from lmlab.retrieval.evaluate import RetrievalOptions

    result = evaluate_beir(need_data("scifact"), "bm25", opts=RetrievalOptions(analyzer=Analyzer(stemmer="porter")))
    assert result["ndcg@10"] == pytest.approx(0.679, abs=0.01)  # Anserini's flat index (Porter-stemmed)
