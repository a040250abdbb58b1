"""Translation decodes through the one decoding loop: an encoder–decoder bound to a batch of sources
gives prompt row i source i (``prefill``), so a batch of translations runs as one ``Engine`` call.
Checked against the model itself without the loop: every greedy token is the argmax of one
teacher-forced forward pass over that sentence's own (unpadded) source, and stops at EOS; beams
and batch sizes change nothing they should not; the RNN's states of different source lengths
batch together (``concat_states``) and decode as they do alone."""

from __future__ import annotations

import random

import pytest
import torch
from torch_threads import one_thread  # noqa: F401

from lmlab.core.errors import ConfigError, InputError
from lmlab.data.loaders import pad_batch
from lmlab.generate.beam import beam_search
from lmlab.generate.engine import Engine, Request
from lmlab.generate.translate import decoder_start, encode_sources, translate
from lmlab.kvcache.settings import cache_settings, prefill_setup
from lmlab.models.config import TransformerConfig
from lmlab.models.rnn_seq2seq import RNNEncoderDecoder
from lmlab.models.seq2seq import EncoderDecoder
from lmlab.tokenizers import WordLevelTokenizer

WORDS = "a b c d e f g h i j k l m n o p q r s t".split()
TOKENIZER = WordLevelTokenizer("word").train([" ".join(WORDS)])
SPECIAL = {"bos_id": TOKENIZER.bos_id, "eos_id": TOKENIZER.eos_id, "pad_id": TOKENIZER.pad_id}
RNNS = [("bahdanau", False, "gru", True), ("bahdanau", True, "lstm", True), ("general", False, "lstm", True),
        ("general", True, "gru", False), ("dot", False, "gru", False), ("none", False, "lstm", True)]


def texts(n: int = 12, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))) for _ in range(n)]


def rnn(attention: str, copy: bool, cell: str, feeding: bool, seed: int = 0) -> RNNEncoderDecoder:
    torch.manual_seed(seed)
    model = RNNEncoderDecoder(TOKENIZER.vocab_size, attention=attention, copy=copy, cell=cell, input_feeding=feeding,
                              d_embed=12, d_hidden=16, n_layers=2, dropout=0.0, context_length=12).eval()
    model.set_special_ids(SPECIAL)
    return model


def transformer(seed: int = 5) -> EncoderDecoder:
    torch.manual_seed(seed)
    model = EncoderDecoder(TransformerConfig.from_preset("bart", vocab_size=TOKENIZER.vocab_size, d_model=16,
                                                         n_layers=2, n_heads=4, context_length=12)).eval()
    model.set_special_ids(SPECIAL)
    return model


# EOS raised on three of the untrained models, so that some sentences stop early and leave the batch
# while others decode on (chosen by looking: 3, 5 and 11 of the 12 stop within 7 tokens)
EOS_BIAS = {0: 0.75, 3: 0.75, 4: 1.0}


def made(i: int) -> RNNEncoderDecoder:
    model = rnn(*RNNS[i], seed=i)
    with torch.no_grad():
        model.head.bias[TOKENIZER.eos_id] += EOS_BIAS.get(i, 0.0)
    return model


MODELS = [pytest.param(lambda i=i: made(i), id=f"rnn{i}-{a}-{cell}{'-copy' * c}")
          for i, (a, c, cell, _) in enumerate(RNNS)] + [pytest.param(transformer, id="bart")]


@torch.no_grad()
@pytest.mark.parametrize("make", MODELS)
def test_greedy_translation_is_the_teacher_forced_argmax_of_each_own_source(make):
    model = make()
    sources = encode_sources(model, TOKENIZER, texts())
    start = decoder_start(model)
    ids, mask = pad_batch(sources, TOKENIZER.pad_id)
    model.bind(ids, mask.long())
    limit = 7
    done = Engine(model, greedy=True, decode_layout=False).generate(
        [Request([start], max_new_tokens=limit) for _ in sources])
    model.source = None
    stopped = 0
    for source, completion in zip(sources, done, strict=True):
        out = completion.ids + ([model.eos_id] if completion.finish_reason == "stop" else [])
        assert len(completion.ids) <= limit and (completion.finish_reason == "stop" or len(out) == limit)
        assert model.eos_id not in completion.ids
        logits, _ = model(torch.tensor([[start, *out[:-1]]]), source=torch.tensor([source]))
        assert logits[0].argmax(-1).tolist() == out
        stopped += completion.finish_reason == "stop"
    if isinstance(model, RNNEncoderDecoder) and model.head.bias[model.eos_id] > 0.5:
        assert 0 < stopped < len(sources)  # rows left the batch while others decoded on


@torch.no_grad()
@pytest.mark.parametrize("make", [MODELS[1], MODELS[3], MODELS[-1]])
def test_batch_size_and_beam_agree_with_one_sentence_at_a_time(make):
    model = make()
    batch = translate(model, TOKENIZER, texts(), batch_size=5, max_new_tokens=6)
    assert batch == translate(model, TOKENIZER, texts(), batch_size=1, max_new_tokens=6)
    assert translate(model, TOKENIZER, texts(), batch_size=64, max_new_tokens=99) == \
        translate(model, TOKENIZER, texts(), batch_size=64)  # ceiling: the context less the start token
    assert model.source is None  # nothing left bound
    beams = translate(model, TOKENIZER, texts()[:4], beam_size=3, max_new_tokens=6, length_penalty=0.6)
    for text, translated in zip(texts()[:4], beams, strict=True):  # as beam search on that one source
        model.bind(torch.tensor(encode_sources(model, TOKENIZER, [text])[0]))
        best = beam_search(model, [decoder_start(model)], beam_size=3, max_new_tokens=6, length_penalty=0.6)[0]
        assert translated == TOKENIZER.decode(best.ids, skip_special_tokens=True)
    model.source = None


@torch.no_grad()
def test_rnn_states_of_different_source_lengths_batch_together():
    model = rnn("general", True, "lstm", True)
    long, short = torch.randint(3, 20, (1, 9)), torch.randint(3, 20, (1, 4))
    a, b = model.start(long), model.start(short)
    ids = torch.randint(3, 20, (1, 3))
    _, a = model(ids, a)
    _, b = model(ids, b)
    both = model.concat_states([a, b])
    assert both.memory.shape == (2, 9, 16) and both.source_mask[1].tolist() == [True] * 4 + [False] * 5
    assert both.attention.shape == (2, 3, 9) and not both.attention[1, :, 4:].any()
    step = torch.tensor([[7], [8]])
    joint, _ = model(step, both)
    alone = torch.cat([model(step[:1], a)[0], model(step[1:], b)[0]])
    torch.testing.assert_close(joint, alone, atol=2e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("make", [MODELS[0], MODELS[-1]])
def test_prefill_gives_each_prompt_its_own_source_or_shares_one(make):
    model = make()
    sources = [torch.randint(3, 20, (n,)) for n in (5, 3)]
    prompts = [[decoder_start(model), 6, 7], [decoder_start(model)]]  # unequal lengths: row by row
    ids = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True)
    model.bind(ids, torch.tensor([[1] * 5, [1] * 3 + [0] * 2]))
    scores, state = model.prefill(prompts)
    for i, (source, prompt) in enumerate(zip(sources, prompts, strict=True)):
        logits, _ = model(torch.tensor([prompt]), source=source[None])
        torch.testing.assert_close(scores[i], logits[0, -1].float(), atol=2e-5, rtol=0)
    with pytest.raises(InputError, match="2 bound sources for a batch of 3"):
        model.prefill([[1], [1], [1]])
    model.bind(sources[0])  # one source, shared by every prompt
    shared, _ = model.prefill([[decoder_start(model)]] * 3)
    torch.testing.assert_close(shared[0], shared[2])
    with pytest.raises(ConfigError, match="need a KV cache"):  # a cache policy is refused, not ignored
        model.prefill([[decoder_start(model)]], setup=prefill_setup([cache_settings("window", 4)]))
    model.source = None
