"""The vision transformer and the CLIP-style dual encoder: patches cut exactly as by hand, images of
the wrong size refused naming both sizes, the digits split stratified and disjoint with captions
that name the label, and a small dual encoder trained with the symmetric InfoNCE loss on the one
trainer classifying held-out digits zero-shot far above chance (10 %)."""

from __future__ import annotations

import pytest
import torch
from torch_threads import one_thread  # noqa: F401

from lmlab.core.errors import ConfigError, DataError, InputError
from lmlab.data.loaders import pad_batch
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.models.vision import DualEncoder, PatchEncoder, zero_shot

pytest.importorskip("sklearn")

from lmlab.data.digits import NAMES, TEMPLATES, caption, load_digits  # noqa: E402
from lmlab.train.clip import ImageTextBatches, train_clip  # noqa: E402


def test_patches_are_cut_row_by_row_and_the_wrong_size_is_refused():
    encoder = PatchEncoder(image_size=4, patch_size=2, channels=1, d_model=8, n_layers=1, n_heads=2)
    image = torch.arange(16.0).view(1, 4, 4)
    expect = torch.tensor([[[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]], dtype=torch.float32)
    assert torch.equal(encoder.patches(image), expect)
    cls, patches = encoder(image)
    assert cls.shape == (1, 8) and patches.shape == (1, 4, 8)
    with pytest.raises(InputError, match=r"\(1, 8, 8\) given; this encoder reads 1×4×4"):
        encoder(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="does not divide"):
        PatchEncoder(image_size=8, patch_size=3)


def test_digits_split_is_stratified_disjoint_and_captioned():
    train, test, every = load_digits("train"), load_digits("test"), load_digits("all")
    assert len(train.labels) + len(test.labels) == len(every.labels) == 1797
    assert train.images.shape[1:] == (8, 8) and 0 <= float(train.images.min()) and float(train.images.max()) <= 1
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # a fifth of each class (174..183 images)
    pixels = {tuple(row.flatten().tolist()) for row in test.images}
    assert not any(tuple(row.flatten().tolist()) in pixels for row in train.images[:200])
    assert all(NAMES[y] in c.split() for y, c in zip(train.labels.tolist(), train.captions, strict=True))
    assert len(set(train.captions)) > 10  # the templates vary
    with pytest.raises(DataError, match="3 images but 2 captions"):
        ImageTextBatches(train.images[:3], [[1], [2]], 2)


def test_clip_on_digits_classifies_held_out_images_zero_shot(tmp_path, no_progress):
    from lmlab.tokenizers import WordLevelTokenizer

    train, test = load_digits("train"), load_digits("test")
    all_captions = [caption(y, k) for y in range(10) for k in range(len(TEMPLATES))]
    tok = WordLevelTokenizer("word").train(all_captions)
    torch.manual_seed(0)
    text = TransformerLM(TransformerConfig.from_preset("bert", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                                                       n_heads=4, d_ff=64, context_length=16))
    model = DualEncoder(PatchEncoder(8, 2, d_model=32, n_layers=2, n_heads=4), text, dim=32)
    classes = [pad_batch([tok.encode(caption(y, k)) for k in range(len(TEMPLATES))], tok.pad_id) for y in range(10)]
    before = float((zero_shot(model, test.images, classes) == test.labels).float().mean())
    result = train_clip(model, tok, train.images, train.captions, tmp_path / "run", steps=150, batch_size=64,
                        lr=2e-3)
    after = float((zero_shot(model, test.images, classes) == test.labels).float().mean())
    assert result.steps == 150 and before < 0.25 and after > 0.45, (before, after)
