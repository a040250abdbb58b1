"""Pretraining noise: hand-computed small cases, exact invariants, and statistics over 1 M tokens."""

import pytest
import torch

from lmlab.core.errors import ConfigError, InputError
from lmlab.data.noising import (
    IGNORE_INDEX,
    IS_NEXT,
    NOT_NEXT,
    document_rotation,
    mask_tokens,
    next_sentence_pairs,
    pack_sentence_pair,
    random_spans_noise_mask,
    replaced_token_detection,
    restore_span_corruption,
    sentence_permutation,
    span_corruption,
    span_corruption_lengths,
    text_infilling,
    token_deletion,
    word_start_table,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = [PAD, CLS, SEP, MASK]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each maximal True run."""
    out, start = [], None
    for i, flag in enumerate(mask.tolist() + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i - start))
            start = None
    return out


# ---------------------------------------------------------------- masked LM


def test_mask_everything_hand_case():
    ids = torch.tensor([[CLS, 10, 11, 12, SEP, PAD]])
    inputs, labels = mask_tokens(ids, mask_id=MASK, rate=1.0, mask_fraction=1.0, random_fraction=0.0,
                                 special_ids=SPECIALS, generator=gen())
    assert inputs.tolist() == [[CLS, MASK, MASK, MASK, SEP, PAD]]
    assert labels.tolist() == [[-100, 10, 11, 12, -100, -100]]


def test_keep_fraction_leaves_inputs_and_rate_zero_selects_nothing():
    ids = torch.tensor([5, 6, 7, 8])
    inputs, labels = mask_tokens(ids, mask_id=MASK, rate=1.0, mask_fraction=0.0, random_fraction=0.0)
    assert inputs.tolist() == ids.tolist() and labels.tolist() == ids.tolist()
    inputs, labels = mask_tokens(ids, mask_id=MASK, rate=0.0, generator=gen(), vocab_size=20)
    assert inputs.tolist() == ids.tolist() and (labels == IGNORE_INDEX).all()


def test_random_replacements_are_never_special_or_mask():
    ids = torch.randint(4, 12, (200, 50), generator=gen(1))
    inputs, labels = mask_tokens(ids, mask_id=MASK, vocab_size=12, rate=1.0, mask_fraction=0.0,
                                 random_fraction=1.0, special_ids=SPECIALS, generator=gen(2))
    assert not torch.isin(inputs, torch.tensor(SPECIALS)).any()
    assert set(inputs.unique().tolist()) == set(range(4, 12))       # every ordinary id can appear


def test_selection_statistics_over_a_million_tokens():
    ids = torch.randint(4, 30000, (1000, 1000), generator=gen(3))
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[::7, 900:-1] = PAD                                  # some padding rows
    inputs, labels = mask_tokens(ids, mask_id=MASK, vocab_size=30000, special_ids=SPECIALS,
                                 generator=gen(4))
    special = torch.isin(ids, torch.tensor(SPECIALS))
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any()
    assert (inputs[special] == ids[special]).all()
    rate = selected.sum().item() / (~special).sum().item()
    masked = (inputs[selected] == MASK).float().mean().item()
    kept = (inputs[selected] == ids[selected]).float().mean().item()
    randomised = 1 - masked - kept
    # within 0.5 % (absolute) of the configured values, and within 4 binomial standard errors
    for measured, target, n in ((rate, 0.15, (~special).sum().item()), (masked, 0.8, selected.sum().item()),
                                (randomised, 0.1, selected.sum().item())):
        assert abs(measured - target) < 0.005
        assert abs(measured - target) < 4 * (target * (1 - target) / n) ** 0.5
    # a random replacement may draw the original id by chance (1 in ~30 000), so "kept" ≈ 0.1
    assert abs(kept - 0.1) < 0.005


def test_same_seed_same_noise():
    ids = torch.randint(4, 100, (8, 32), generator=gen(5))
    first = mask_tokens(ids, mask_id=MASK, vocab_size=100, special_ids=SPECIALS, generator=gen(6))
    second = mask_tokens(ids, mask_id=MASK, vocab_size=100, special_ids=SPECIALS, generator=gen(6))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_word_start_table_from_wordpiece_and_sentencepiece():
    assert word_start_table(["[CLS]", "play", "##ing", "the", "##e"],
                            continuation_prefix="##").tolist() == [True, True, False, True, False]
    assert word_start_table(["▁the", "re", "▁cat"], start_prefix="▁").tolist() == [True, False, True]
    with pytest.raises(ConfigError):
        word_start_table(["a"])


def test_whole_word_masking_selects_whole_words_only():
    pieces = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" if i % 3 == 0 else f"##p{i}" for i in range(60)]
    table = word_start_table(pieces, continuation_prefix="##")
    ids = torch.randint(4, len(pieces), (400, 40), generator=gen(7))
    ids[:, 0] = CLS
    inputs, labels = mask_tokens(ids, mask_id=MASK, vocab_size=len(pieces), special_ids=SPECIALS,
                                 word_starts=table[ids], generator=gen(8))
    selected = labels != IGNORE_INDEX
    starts = table[ids] | torch.isin(ids, torch.tensor(SPECIALS))
    starts[:, 0] = True
    word_id = torch.cumsum(starts.long(), dim=1)
    for row in range(ids.shape[0]):
        for word in word_id[row].unique():
            in_word = (word_id[row] == word) & ~torch.isin(ids[row], torch.tensor(SPECIALS))
            flags = selected[row][in_word]
            assert flags.all() or not flags.any()
    assert not selected[:, 0].any()
    words = starts & ~torch.isin(ids, torch.tensor(SPECIALS))
    word_rate = selected[words].float().mean().item()
    assert abs(word_rate - 0.15) < 0.01                      # about 20 000 words


def test_mask_tokens_rejects_bad_arguments():
    with pytest.raises(ConfigError):
        mask_tokens([1, 2], mask_id=MASK, mask_fraction=0.8, random_fraction=0.3, vocab_size=9)
    with pytest.raises(ConfigError):
        mask_tokens([1, 2], mask_id=MASK, rate=1.5, vocab_size=9)
    with pytest.raises(ConfigError):
        mask_tokens([1, 2], mask_id=MASK)                    # random replacement needs a vocabulary
    with pytest.raises(InputError):
        mask_tokens([1.0, 2.0], mask_id=MASK, vocab_size=9)
    with pytest.raises(InputError):
        mask_tokens([[1, 2]], mask_id=MASK, vocab_size=9, word_starts=[True, False])


# ---------------------------------------------------------------- next-sentence prediction


def test_next_sentence_pairs_true_and_random():
    docs = [[[1], [2], [3]], [[10], [11]], [[20]]]
    pairs = next_sentence_pairs(docs, random_fraction=0.0)
    assert pairs == [([1], [2], IS_NEXT), ([2], [3], IS_NEXT), ([10], [11], IS_NEXT)]
    pairs = next_sentence_pairs(docs, random_fraction=1.0, generator=gen(9))
    assert [p[2] for p in pairs] == [NOT_NEXT] * 3
    own = {0: {1, 2, 3}, 1: {10, 11}}
    for (a, b, _), doc in zip(pairs, [0, 0, 1], strict=True):
        assert a[0] in own[doc] and b[0] not in own[doc]
    labels = [p[2] for p in next_sentence_pairs([[[i] for i in range(2001)], [[5000]]], generator=gen(10))]
    assert abs(sum(labels) / len(labels) - 0.5) < 0.05
    with pytest.raises(InputError):
        next_sentence_pairs([[[1], [2]]], random_fraction=1.0)


def test_pack_sentence_pair_hand_case_and_truncation():
    ids, segments = pack_sentence_pair([5, 6], [7], cls_id=CLS, sep_id=SEP)
    assert ids == [CLS, 5, 6, SEP, 7, SEP] and segments == [0, 0, 0, 0, 1, 1]
    ids, segments = pack_sentence_pair([5, 6, 7, 8], [9, 10], cls_id=CLS, sep_id=SEP, max_length=7)
    assert ids == [CLS, 5, 6, SEP, 9, 10, SEP] and segments == [0, 0, 0, 0, 1, 1, 1]


# ---------------------------------------------------------------- T5 span corruption


def test_t5_paper_example():
    # "Thank you <X> me to your party <Y> week ." / "<X> for inviting <Y> last <Z>"
    words = "Thank you for inviting me to your party last week .".split()
    ids = torch.arange(10, 10 + len(words))
    noise = torch.tensor([w in ("for", "inviting", "last") for w in words])
    inputs, targets = span_corruption(ids, vocab_size=100, noise_mask=noise)
    assert inputs.tolist() == [10, 11, 99, 14, 15, 16, 17, 98, 19, 20]
    assert targets.tolist() == [99, 12, 13, 98, 18, 97]
    assert restore_span_corruption(inputs, targets, vocab_size=100).tolist() == ids.tolist()


def test_noise_mask_counts_match_t5_formulae():
    # length 8, density 0.25 -> 2 noise tokens in round(2/2) = 1 span; T5 puts it last
    assert random_spans_noise_mask(8, 0.25, 2.0, gen()).tolist() == [False] * 6 + [True] * 2
    for length in (10, 37, 100, 512):
        for density, mean in ((0.15, 3.0), (0.3, 1.5), (0.5, 8.0)):
            mask = random_spans_noise_mask(length, density, mean, gen(length))
            num_noise = min(max(round(length * density), 1), length - 1)
            spans = runs(mask)
            assert int(mask.sum()) == num_noise
            assert len(spans) == max(round(num_noise / mean), 1)
            assert not mask[0] and mask[-1]                  # non-noise first, noise last


def test_span_corruption_round_trips_and_uses_top_sentinels():
    g = gen(11)
    for trial in range(50):
        length = 2 + trial * 7
        ids = torch.randint(0, 30000, (length,), generator=g)
        inputs, targets = span_corruption(ids, vocab_size=32100, noise_density=0.15, mean_span_length=3.0,
                                          eos_id=1, generator=g)
        assert inputs[-1] == 1 and targets[-1] == 1
        sentinels = inputs[inputs >= 32000]
        assert sentinels.tolist() == list(range(32099, 32099 - len(sentinels), -1))
        assert targets[0] == 32099
        restored = restore_span_corruption(inputs, targets, vocab_size=32100, eos_id=1)
        assert restored.tolist() == ids.tolist()


def test_span_corruption_round_trips_masks_that_start_with_noise():
    ids = torch.tensor([5, 6, 7, 8, 9])
    noise = torch.tensor([True, True, False, True, False])
    inputs, targets = span_corruption(ids, vocab_size=50, noise_mask=noise)
    assert inputs.tolist() == [49, 7, 48, 9] and targets.tolist() == [5, 6, 49, 8, 48]
    assert restore_span_corruption(inputs, targets, vocab_size=50).tolist() == ids.tolist()


def test_span_corruption_lengths_match_t5():
    # T5 pretrains with 512 input tokens: 568 raw tokens, 114 target tokens
    assert span_corruption_lengths(512, 0.15, 3.0) == (568, 114)
    for inputs_length in (64, 128, 512):
        tokens_length, targets_length = span_corruption_lengths(inputs_length)
        for seed in range(3):
            ids = torch.randint(0, 30000, (tokens_length,), generator=gen(seed))
            inputs, targets = span_corruption(ids, vocab_size=32100, eos_id=1, generator=gen(seed))
            assert (len(inputs), len(targets)) == (inputs_length, targets_length)


# ---------------------------------------------------------------- BART


def test_token_deletion_rates():
    ids = torch.arange(100_000)
    assert token_deletion(ids, rate=0.0).tolist() == ids.tolist()
    assert token_deletion(ids, rate=1.0).numel() == 0
    kept = token_deletion(ids, rate=0.1, generator=gen(12))
    assert abs(kept.numel() / 100_000 - 0.9) < 0.005
    assert (kept.diff() > 0).all()                            # order kept


def test_text_infilling_invariants():
    g = gen(13)
    masks = 0
    for _ in range(100):
        ids = torch.randint(10, 1000, (300,), generator=g)
        out = text_infilling(ids, mask_id=MASK, rate=0.3, poisson_lambda=3.0, generator=g)
        is_mask = out == MASK
        kept = out[~is_mask]
        assert kept.numel() == 300 - 90                      # exactly ceil(0.3 * 300) tokens removed
        it = iter(ids.tolist())                              # kept tokens are a subsequence, in order
        assert all(any(tok == x for x in it) for tok in kept.tolist())
        assert not (is_mask[1:] & is_mask[:-1]).any()        # one mask per span, spans apart
        masks += int(is_mask.sum())
    # 90 masked tokens in spans of mean ≈ 3 (the last span is cut short): about 30 masks each
    assert 25 < masks / 100 < 35
    assert text_infilling([4, 5, 6], mask_id=MASK, rate=0.0).tolist() == [4, 5, 6]


def test_sentence_permutation_shuffles_whole_sentences():
    stop = 9
    ids = torch.tensor([1, 2, stop, 3, stop, 4, 5, 6, stop, 7])
    sentences = {(1, 2, stop), (3, stop), (4, 5, 6, stop), (7,)}
    seen = set()
    for seed in range(20):
        out = sentence_permutation(ids, sentence_ends=ids == stop, generator=gen(seed)).tolist()
        assert sorted(out) == sorted(ids.tolist())
        pieces, current = [], []
        for tok in out:
            current.append(tok)
            if tok == stop:
                pieces.append(tuple(current))
                current = []
        pieces += [tuple(current)] if current else []
        # the unfinished sentence (7,) may land mid-sequence and join the next one
        assert set(pieces) <= sentences | {(7, *s) for s in sentences}
        seen.add(tuple(out))
    assert len(seen) > 5


def test_document_rotation_is_a_rotation():
    ids = torch.arange(10)
    out = document_rotation(ids, generator=gen(14)).tolist()
    start = out.index(0)
    assert out[start:] + out[:start] == list(range(10))


# ---------------------------------------------------------------- ELECTRA


def test_replaced_token_detection_hand_case():
    ids = torch.tensor([[CLS, 10, 11, 12, SEP]])
    masked = torch.tensor([[False, True, True, False, False]])
    inputs, labels = replaced_token_detection(ids, masked, torch.tensor([10, 40]), special_ids=SPECIALS)
    assert inputs.tolist() == [[CLS, 10, 40, 12, SEP]]
    assert labels.tolist() == [[-100, 0, 1, 0, -100]]         # sampling the original counts as original
    full = torch.tensor([[0, 99, 11, 0, 0]])
    inputs, labels = replaced_token_detection(ids, masked, full)
    assert inputs.tolist() == [[CLS, 99, 11, 12, SEP]] and labels.tolist() == [[0, 1, 0, 0, 0]]
    with pytest.raises(InputError):
        replaced_token_detection(ids, masked, torch.tensor([1, 2, 3]))


def test_mlm_statistics_agree_with_transformers_collator():
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, **{f"w{i}": i + 4 for i in range(996)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[PAD]"))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", cls_token="[CLS]",
                                               sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    ids = torch.randint(4, 1000, (200, 500))
    ids[:, 0], ids[:, -1] = 1, 2
    collator = transformers.DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    theirs = collator([{"input_ids": row.tolist()} for row in ids])
    ours = mask_tokens(ids, mask_id=MASK, vocab_size=1000, special_ids=SPECIALS, generator=gen(15))
    for inputs, labels in ((theirs["input_ids"], theirs["labels"]), ours):
        selected = labels != IGNORE_INDEX
        assert not selected[:, 0].any() and not selected[:, -1].any()
        assert abs(selected[:, 1:-1].float().mean().item() - 0.15) < 0.005
        assert abs((inputs[selected] == MASK).float().mean().item() - 0.8) < 0.01
