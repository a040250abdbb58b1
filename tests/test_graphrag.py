"""GraphRAG: the extraction format's parser, entity resolution, Louvain communities against networkx,
report contexts, global search's map-reduce packing, local search's context, and `lmlab rag` end to end."""

import json

import networkx as nx
import pytest
from align_tiny import tiny_chat_tokenizer
from sft_tiny import tiny_model

from lmlab.cli import main
from lmlab.models import save_model_dir
from lmlab.retrieval.chunking import Chunk
from lmlab.retrieval.graph import (
    Community,
    GraphIndex,
    build_graph,
    build_graph_index,
    community_elements,
    hierarchical_communities,
    pack,
)
from lmlab.retrieval.graph_extract import (
    Entity,
    Extraction,
    Relation,
    cooccurrence_extraction,
    normalise_name,
    parse_extraction,
)
from lmlab.retrieval.graph_search import (
    PartialAnswer,
    global_search,
    local_context,
    pack_by_score,
    parse_scored_answer,
)


def words(text: str) -> int:
    return len(text.split())


class CannedChat:
    """A chat model whose answers are chosen by what the prompt contains (first match wins)."""

    def __init__(self, replies: dict[str, str] | None = None, default: str = "A report.") -> None:
        self.replies, self.default, self.prompts = replies or {}, default, []

    def generate_many(self, prompts, max_new_tokens=None, stop=(), desc="", start=""):
        self.prompts += prompts
        return [start + next((r for key, r in self.replies.items() if key in p), self.default) for p in prompts]

    def count_tokens(self, text: str) -> int:
        return words(text)


OUTPUT = """("entity"<|>ADA LOVELACE<|>person<|>A mathematician)##
("entity"<|>"London"<|>GEO<|>A city)##
"entity"<|>Charles Babbage<|>person<|>An inventor##
Here are the relationships:
("relationship"<|>Ada Lovelace<|>Charles Babbage<|>They worked together<|>8)##
("relationship"<|>Charles Babbage<|>London<|>He lived there<|>strong)##
("relationship"<|>Ada Lovelace<|>Analytical Engine<|>She wrote its first program<|>9)##
("entity"<|>only three<|>fields)##
("place"<|>Paris<|>geo<|>A city)##
("entity"<|>  <|>person<|>no name)
<|COMPLETE|>
("entity"<|>AFTER<|>person<|>ignored)"""


def test_the_extraction_parser_reads_records_and_counts_every_bad_line():
    ex = parse_extraction(OUTPUT)
    assert [(e.name, e.type, e.description) for e in ex.entities] == [
        ("ADA LOVELACE", "person", "A mathematician"), ("London", "geo", "A city"),
        ("Charles Babbage", "person", "An inventor"), ("Analytical Engine", "", "")]
    assert ex.relations == [Relation("Ada Lovelace", "Charles Babbage", "They worked together", 8.0),
                            Relation("Charles Babbage", "London", "He lived there", 1.0),
                            Relation("Ada Lovelace", "Analytical Engine", "She wrote its first program", 9.0)]
    assert ex.default_strength == 1  # 'strong' is no number: 1.0, counted
    assert ex.malformed == ["Here are the relationships:", '("entity"<|>only three<|>fields)',
                            '("place"<|>Paris<|>geo<|>A city)', '("entity"<|>  <|>person<|>no name)']
    assert parse_extraction("") == Extraction()


def test_records_naming_what_the_chunk_never_mentions_are_ungrounded():
    chunk = "Ada Lovelace met Charles Babbage in London."
    ex = parse_extraction(OUTPUT, chunk)
    assert {e.name for e in ex.entities} == {"ADA LOVELACE", "London", "Charles Babbage"}
    assert ex.ungrounded == ['("relationship"<|>Ada Lovelace<|>Analytical Engine<|>She wrote its first program<|>9)']
    assert len(ex.relations) == 2


def test_entities_resolve_by_normalised_name_and_relation_strengths_add_up():
    assert normalise_name("The  EIFFEL-tower!") == "the eiffel tower"
    one = Extraction([Entity("Eiffel Tower", "geo", "A tower"), Entity("Paris", "geo", "A city")],
                     [Relation("Eiffel Tower", "Paris", "stands in", 7.0)])
    two = Extraction([Entity("EIFFEL-TOWER", "geo", "Iron"), Entity("eiffel tower", "event", "A tower")],
                     [Relation("eiffel tower", "PARIS", "landmark of", 2.0), Relation("Paris", "paris", "self", 1.0)])
    g = build_graph([("c1", one), ("c2", two)])
    assert sorted(g.nodes) == ["eiffel tower", "paris"]
    tower = g.nodes["eiffel tower"]
    assert tower["name"] == "Eiffel Tower" and tower["type"] == "geo"  # commonest type (2 of 3)
    assert tower["descriptions"] == ["A tower", "Iron"] and tower["chunks"] == ["c1", "c2"]
    edge = g.edges["eiffel tower", "paris"]
    assert edge["weight"] == 9.0 and edge["descriptions"] == ["stands in", "landmark of"]
    assert g.graph["self_relations"] == 1


def test_the_cooccurrence_extractor_relates_capitalised_spans_of_one_sentence():
    ex = cooccurrence_extraction("The Eiffel Tower stands in Paris. Gustave Eiffel built it in Paris. It is tall.")
    assert [e.name for e in ex.entities] == ["Eiffel Tower", "Paris", "Gustave Eiffel"]
    assert ex.entities[0].description == "The Eiffel Tower stands in Paris."
    assert sorted((r.source, r.target, r.strength) for r in ex.relations) == [
        ("Eiffel Tower", "Paris", 1.0), ("Gustave Eiffel", "Paris", 1.0)]


@pytest.mark.parametrize("seed", [0, 3])
def test_louvain_levels_match_networkx_called_directly(seed):
    g = nx.karate_club_graph()
    communities = hierarchical_communities(g, seed=seed)
    partitions = list(nx.community.louvain_partitions(g, weight="weight", seed=seed))
    levels = 1 + max(c.level for c in communities)
    assert levels == len(partitions) >= 2
    for level, partition in enumerate(reversed(partitions)):
        ours = {frozenset(c.entities) for c in communities if c.level == level}
        assert ours == {frozenset(p) for p in partition}
    coarsest = {frozenset(c.entities) for c in communities if c.level == 0}
    assert coarsest == {frozenset(p) for p in nx.community.louvain_communities(g, seed=seed)}
    by_id = {c.id: c for c in communities}
    for c in communities:  # the hierarchy nests: a community lies inside its parent, listed as its child
        if c.level:
            assert set(c.entities) <= set(by_id[c.parent].entities) and c.id in by_id[c.parent].children
    assert [(c.id, c.entities) for c in hierarchical_communities(g, seed=seed)] == [(c.id, c.entities) for c in communities]


def test_report_elements_come_by_combined_degree_and_pack_stops_at_the_budget():
    g = build_graph([("c", Extraction([Entity("Hub", "", "h"), Entity("A", "", "a"), Entity("B", "", "b"),
                                        Entity("C", "", "c"), Entity("Lone", "", "l")],
                                       [Relation("Hub", "A", "ha", 1), Relation("Hub", "B", "hb", 1),
                                        Relation("A", "B", "ab", 1), Relation("B", "C", "bc", 1)]))])
    lines = community_elements(g, g.nodes)
    # degrees: hub 2, a 2, b 3, c 1 -> edges a-b (5), hub-b (5), hub-a (4), b-c (4) (ties by the sorted
    # keys), each after its entities not yet listed; then the entity without relations
    assert lines == ["A: a", "B: b", "A -- B: ab", "Hub: h", "Hub -- B: hb", "Hub -- A: ha", "C: c",
                     "B -- C: bc", "Lone: l"]
    assert pack(["one two", "three", "four five six", "x"], 3, words) == ["one two", "three"]


def test_map_reduce_keeps_the_best_scored_answers_that_fit_the_budget():
    assert parse_scored_answer("Score: 85\nAnswer: It rained.") == ("It rained.", 85)
    assert parse_scored_answer("It rained. score = 150") == ("It rained.", 100)
    assert parse_scored_answer("no number here") == ("no number here", None)
    partials = [PartialAnswer("0.0", "low low", 10), PartialAnswer("0.1", "none", 0),
                PartialAnswer("0.2", "top answer here", 90), PartialAnswer("0.3", "unscored", None),
                PartialAnswer("0.4", "mid mid mid mid", 50), PartialAnswer("0.5", "tie", 50)]
    assert [p.community for p in pack_by_score(partials, 100, words)] == ["0.2", "0.4", "0.5", "0.0"]
    assert [p.community for p in pack_by_score(partials, 7, words)] == ["0.2", "0.4"]  # 3 + 4 words


def small_index() -> GraphIndex:
    g = build_graph([("d#0-10", Extraction([Entity("Storm", "event", "a hurricane"), Entity("Florida", "geo", "a state"),
                                             Entity("Tampa", "geo", "a city"), Entity("Poet", "person", "writes")],
                                            [Relation("Storm", "Florida", "hit", 5), Relation("Storm", "Tampa", "flooded", 3),
                                             Relation("Poet", "Tampa", "lived in", 1)]))])
    communities = [Community("0.0", 0, ["florida", "storm", "tampa"], report="Storms hit Florida."),
                   Community("0.1", 0, ["poet"], report="A poet writes poems.")]
    return GraphIndex(g, communities, {})


def test_global_search_maps_every_report_and_reduces_the_scored_answers():
    chat = CannedChat({"Storms hit Florida": " 80\nAnswer: A storm hit Florida.",
                       "A poet writes": " 0\nAnswer: Nothing.", "Analysts": "Storms hit Florida hard."})
    out = global_search(small_index(), "What disasters happened?", chat)
    assert [(p["community"], p["score"]) for p in out["partials"]] == [("0.0", 80), ("0.1", 0)]
    assert out["used"] == ["0.0"] and out["answer"] == "Storms hit Florida hard."
    assert "A storm hit Florida." in out["prompt"] and "Nothing." not in out["prompt"]
    silent = global_search(small_index(), "What?", CannedChat(default=" none\nAnswer: no idea"))
    assert silent["found"] is False and silent["unscored"] == 2


def test_local_context_holds_the_matched_entity_and_its_neighbours():
    chunks = {"d#0-10": Chunk("d", 0, 10, "the source")}
    ctx = local_context(small_index(), chunks, "What did the storm do?", words, k=1)
    assert ctx["matched"] == ["Storm"] and ctx["neighbours"] == ["Florida", "Tampa"]
    entities = "\n".join(ctx["sections"]["entities"])
    assert "Florida (geo): a state" in entities and "Tampa (geo): a city" in entities and "Poet" not in entities
    assert ctx["sections"]["relations"] == ["Storm -- Florida: hit", "Storm -- Tampa: flooded"]
    assert ctx["sections"]["reports"] == ["Storms hit Florida."] and ctx["sections"]["sources"] == ["the source"]


def test_building_with_a_model_that_writes_no_records_is_refused():
    from lmlab.core.errors import DataError

    with pytest.raises(DataError, match="found no entities"):
        build_graph_index([Chunk("d", 0, 5, "Paris")], CannedChat(default="I cannot."), "model")


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "storm.txt").write_text("The Treasure Coast hurricane struck Florida in 1933. It flooded Tampa and "
                                      "Jupiter. Florida rebuilt Tampa after the hurricane.")
    (folder / "war.txt").write_text("No. 20 Squadron flew Catalinas from Port Moresby. The Japanese attacked Rabaul. "
                                    "Catalinas of No. 20 Squadron bombed Rabaul.")
    return folder


@pytest.fixture
def tiny_chat(tmp_path):
    tok = tiny_chat_tokenizer()
    return str(save_model_dir(tmp_path / "chat", *tiny_model(tok, 0, context_length=256).to_state(), tokenizer=tok))


def test_rag_index_graph_and_ask_graph_end_to_end(docs, tiny_chat, tmp_path, capsys, no_progress):
    ix = str(tmp_path / "ix")
    assert main(["rag", "index", str(docs), "--out", ix, "--size", "120", "--overlap", "0", "--graph",
                 "--extractor", "cooccurrence", "--model", tiny_chat, "--report-tokens", "8", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    graph = GraphIndex.load(ix)
    assert built["graph"]["entities"] == graph.graph.number_of_nodes() >= 8
    assert {"florida", "tampa", "rabaul", "catalinas"} <= set(graph.graph.nodes)
    assert graph.graph.has_edge("florida", "tampa") and not graph.graph.has_edge("florida", "rabaul")
    assert all(c.report for c in graph.communities)
    assert main(["rag", "ask", "What happened to Tampa?", "--index", ix, "--mode", "graph", "--search", "local",
                 "-k", "1", "--model", tiny_chat, "--max-new-tokens", "8", "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert local["matched"] == ["Tampa"] and {"Florida", "Jupiter"} <= set(local["neighbours"])
    assert "answer" in local and "Rabaul" not in local["prompt"]
    assert main(["rag", "ask", "What are the main themes?", "--index", ix, "--mode", "graph",
                 "--model", tiny_chat, "--max-new-tokens", "8", "--level", "0", "--json"]) == 0
    glob = json.loads(capsys.readouterr().out)
    assert glob["search"] == "global" and len(glob["partials"]) == len(graph.at_level(0))


def test_graph_mode_on_an_index_built_without_graph_says_to_rebuild(docs, tmp_path, capsys):
    ix = str(tmp_path / "plain")
    assert main(["rag", "index", str(docs), "--out", ix, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["rag", "ask", "Themes?", "--index", ix, "--mode", "graph"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--graph" in err and "rebuild" in err
    assert main(["rag", "ask", "Themes?", "--index", ix, "--mode", "graphs"]) == 1
    assert "plain, graph" in capsys.readouterr().err
    assert main(["rag", "ask", "Themes?", "--index", ix, "--search", "local"]) == 1
    assert "--mode graph" in capsys.readouterr().err
    assert main(["rag", "index", str(docs), "--out", ix, "--extractor", "model"]) == 1
    assert "--graph" in capsys.readouterr().err


def test_many_questions_share_the_map_and_reduce_calls_and_keep_their_order():
    from lmlab.retrieval.graph_search import global_search_many

    chat = CannedChat({"Question: storms?\nFirst": " 70\nAnswer: storm", "Question: poets?\nFirst": " 60\nAnswer: poet",
                       "Question: storms?\nCombine": "storms", "Question: poets?\nCombine": "poets"}, default=" 0")
    out = global_search_many(small_index(), ["storms?", "none?", "poets?"], chat)
    assert [o["answer"] for o in out] == ["storms", "Not found in the sources.", "poets"]
    assert len(chat.prompts) == 3 * 2 + 2  # 3 questions x 2 reports, then 2 reduce prompts


def test_batched_generation_equals_one_prompt_at_a_time(tiny_chat):
    from lmlab.retrieval.rag import ChatModel

    chat = ChatModel(tiny_chat, max_new_tokens=6, batch_size=2)
    prompts = ["a", "what is the storm", "hi", "poet? the poet"]
    batched = chat.generate_many(prompts, start="ab")
    assert batched == [chat.generate_many([p], start="ab")[0] for p in prompts]
    assert all(text.startswith("ab") for text in batched)
