"""The LLaVA-style model: image tokens enter exactly as token embeddings would (logits equal the language
model's on the same embeddings, with padding), only the projector learns, answers are scored among the
question's candidates, and a wrong image size or count is refused."""

from __future__ import annotations

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import LmlabError
from lmlab.data.digits import NAMES, Digits
from lmlab.models.config import TransformerConfig
from lmlab.models.llava import VisionLanguageModel
from lmlab.models.transformer import TransformerLM
from lmlab.models.vision import PatchEncoder
from lmlab.tokenizers import WordLevelTokenizer
from lmlab.train.llava import (
    QUESTIONS,
    AnswerLoss,
    VQABatches,
    answer_accuracy,
    train_projector,
    vqa_examples,
)

WORDS = ["Question:", "Which", "digit", "is", "this?", "Is", "it", "an", "even", "number?", "Answer:", "yes", "no",
         *NAMES]


def tiny(blind: bool = False, seed: int = 0) -> tuple[VisionLanguageModel, WordLevelTokenizer]:
    tok = WordLevelTokenizer("word").train([" ".join(WORDS)])
    torch.manual_seed(seed)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=2,
                                                     n_heads=4, n_kv_heads=2, d_ff=64, context_length=64)).eval()
    with torch.no_grad():  # at the 0.02 init the tied head's logits are near uniform and attention barely
        lm.embed.weight.mul_(40)  # mixes positions: a prefix could steer nothing
        for name, p in lm.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")):
                p.mul_(10)
    encoder = PatchEncoder(8, 2, d_model=16, n_layers=1, n_heads=2).eval()
    return VisionLanguageModel(encoder, lm, blind=blind), tok


def digits(n: int = 40, seed: int = 0) -> Digits:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.rand(n, 8, 8, generator=g) * 0.2
    for i, y in enumerate(labels.tolist()):  # a bright row per digit: learnable from the picture only
        images[i, y % 8] += 1.0 if y < 8 else 0.5
    return Digits(images, labels, [""] * n)


def test_image_tokens_enter_as_token_embeddings_would():
    model, tok = tiny()
    lm = model.lm
    prefix_ids = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    model.image_tokens = lambda images: lm.embed.base(prefix_ids)  # the image tokens of two known token runs
    ids = torch.tensor([[11, 12, 13], [14, 15, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()
    got = model(torch.zeros(2, 8, 8), ids, mask)
    assert got.shape == (2, 3, tok.vocab_size)
    with torch.no_grad():
        reference, _ = lm(torch.cat([prefix_ids, ids], 1), attention_mask=torch.cat([torch.ones(2, 4).bool(), mask], 1))
    assert torch.allclose(got[0], reference[0, 4:], atol=1e-5)
    assert torch.allclose(got[1, :2], reference[1, 4:6], atol=1e-5)  # the padded position is not compared


def test_only_the_projector_learns():
    model, tok = tiny()
    batches = VQABatches(vqa_examples(digits(), tok), 8)
    loss, n = AnswerLoss()(model.train(), batches.batch(0))
    loss.backward()
    assert n == 8 and all(p.grad is None for p in [*model.lm.parameters(), *model.image_encoder.parameters()])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    assert not model.lm.training and not model.image_encoder.training


def test_training_learns_from_the_picture_and_the_blind_model_cannot(tmp_path):
    train_set, test_set = digits(200, seed=0), digits(60, seed=1)
    seeing, tok = tiny()
    frozen = {k: v.clone() for k, v in seeing.state_dict().items() if not k.startswith("projector")}
    train_projector(seeing, tok, train_set, tmp_path / "seeing", steps=150, batch_size=16, lr=3e-3)
    assert all(torch.equal(v, seeing.state_dict()[k]) for k, v in frozen.items())
    blind, _ = tiny(blind=True)
    train_projector(blind, tok, train_set, tmp_path / "blind", steps=150, batch_size=16, lr=3e-3)
    sees, guesses = answer_accuracy(seeing, tok, test_set), answer_accuracy(blind, tok, test_set)
    assert set(sees) == {q.text for q in QUESTIONS}
    even = "Is it an even number?"
    assert guesses[even] <= 0.6 and sees[even] >= 0.9  # half the digits are even: the blind model can only guess
    assert guesses["Which digit is this?"] <= 0.2  # chance is 0.1


def test_bad_images_are_refused():
    model, tok = tiny()
    ids, mask = torch.tensor([[3, 4]]), torch.ones(1, 2).bool()
    with pytest.raises(LmlabError, match="this encoder reads 1×8×8"):
        model(torch.zeros(1, 16, 16), ids, mask)
    with pytest.raises(LmlabError, match="2 images for 1 texts"):
        model(torch.zeros(2, 8, 8), ids, mask)
