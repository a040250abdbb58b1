"""Tree of thoughts with a scripted model whose proposals and ratings are fixed, so the order in which
BFS and DFS visit states, what they keep, what they prune and where they backtrack is known exactly;
the vote evaluator counts sampled votes; a value function replaces the model's ratings."""

from __future__ import annotations

import pytest
from agents_scripted import ScriptedModel

from lmlab.agents.tot import TreeOfThoughts
from lmlab.core.errors import ConfigError

#: state (joined by "/") → the proposals the model makes for it, and the rating of each state
PROPOSALS = {"": ["a", "b", "c"], "a": ["a1"], "b": ["b1"], "c": ["c1", "c2"], "a/a1": ["x"], "c/c1": ["y"]}
RATINGS = {"a": "likely", "b": "impossible", "c": "sure", "a/a1": "sure", "b/b1": "sure", "c/c1": "impossible",
           "c/c2": "sure", "a/a1/x": "likely", "c/c1/y": "likely"}


def steps_in(prompt: str, header: str, end: str) -> str:
    block = prompt.split(header, 1)[1].split(end, 1)[0] if header in prompt else ""
    return "/".join(line for line in block.splitlines() if line)


def policy(request):
    prompt = request.prompt
    if prompt.endswith("Next step:"):
        state = steps_in(prompt, "Steps so far:\n", "Next step:")
        options = PROPOSALS.get(state, [])
        policy.drawn[state] = policy.drawn.get(state, -1) + 1
        return " " + options[policy.drawn[state] % len(options)] if options else ""
    if prompt.endswith("Answer:"):
        return " " + RATINGS[steps_in(prompt, "Partial solution:\n", "Can this")]
    raise AssertionError(prompt)


def search(method: str, goal: str, **settings):
    policy.drawn = {}
    model = ScriptedModel(policy)
    tot = TreeOfThoughts(model, "Solve it.", lambda steps: steps[-1:] == [goal], **settings)
    return tot.search(method), model


def visited(result) -> list[str]:
    return ["/".join(n["steps"]) for n in result.tree]


def test_bfs_keeps_the_best_states_of_each_level():
    result, model = search("bfs", k=3, breadth=2, depth=3, goal="c2")
    assert result.solved and result.steps == ["c", "c2"] and result.value == 20.0
    assert visited(result) == ["a", "b", "c", "c/c1", "c/c2", "a/a1"]  # b (impossible) left the frontier
    assert [n["depth"] for n in result.tree] == [1, 1, 1, 2, 2, 2]
    assert [n["value"] for n in result.tree] == [1.0, 0.001, 20.0, 0.001, 20.0, 20.0]
    assert result.model_calls == 1 + 3 + 2 + 3 and result.evaluated == 6
    assert all(r.n == 3 for r in model.requests if r.prompt.endswith("Next step:"))  # k proposals, one prefill


def test_bfs_merges_duplicate_proposals_and_stops_when_every_child_is_pruned():
    result, _ = search("bfs", k=6, breadth=1, depth=3, threshold=25.0, goal="none")
    assert visited(result) == ["a", "b", "c"]  # six samples, three distinct thoughts; none reaches 25
    assert not result.solved and result.steps == [] and result.value == 0.0


def test_dfs_takes_the_best_child_first_prunes_and_backtracks():
    result, _ = search("dfs", k=3, depth=3, threshold=1.0, goal="a1")
    # c (sure) first: c2 (sure, not the goal) has no next thought, c1 (impossible) is pruned;
    # back to a (likely): a1 is the goal; b (impossible) is never entered
    assert result.solved and result.steps == ["a", "a1"]
    assert visited(result) == ["a", "b", "c", "c/c1", "c/c2", "a/a1"]


def test_dfs_stops_at_max_nodes_with_the_best_state_so_far():
    result, _ = search("dfs", k=3, depth=3, threshold=1.0, max_nodes=3, goal="a1")
    assert not result.solved and result.steps == ["c"] and result.value == 20.0 and result.evaluated == 3


def test_vote_counts_sampled_votes_and_value_fn_replaces_the_model():
    votes = iter([" 2", " 2", " 1", " 9", " no"])  # 9 is out of range and "no" is not a vote: neither counts
    model = ScriptedModel(lambda r: next(votes))
    tot = TreeOfThoughts(model, "Pick.", lambda s: False, evaluator="vote", value_samples=5)
    assert tot.evaluate([["p"], ["q"], ["r"]]) == [1.0, 2.0, 0.0]
    request = model.requests[0]
    assert request.n == 5 and request.temperature == 0.7 and "Choice 3:\nr\n" in request.prompt
    by_length = TreeOfThoughts(ScriptedModel(policy), "x", lambda s: False, value_fn=lambda s: len("".join(s)))
    assert by_length.evaluate([["ab"], ["abc", "d"]]) == [2.0, 4.0] and by_length.calls == 0
    with pytest.raises(ConfigError, match="evaluator"):
        TreeOfThoughts(model, "x", lambda s: False, evaluator="guess")
    with pytest.raises(ConfigError, match="search"):
        tot.search("astar")
