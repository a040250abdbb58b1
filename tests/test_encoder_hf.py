"""BERT's MLM head transform and Hugging Face BERT directories through ``load_model``: a random
``BertForMaskedLM`` / ``BertModel`` saved by ``transformers`` loads into the ``bert`` preset and
gives the same logits / hidden states (padding and segments included)."""

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ModelError
from lmlab.models import load_model
from lmlab.models.config import TransformerConfig
from lmlab.models.encoder import load_hf_bert
from lmlab.models.transformer import TransformerLM

transformers = pytest.importorskip("transformers")


def hf_bert(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=20, type_vocab_size=2,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = getattr(transformers, kind)(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every tensor's place is checked
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def inputs():
    ids = torch.tensor([[2, 7, 9, 11, 3, 5, 6, 3], [2, 8, 12, 3, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    mask[0] = 1
    segments = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]])
    return ids, mask, segments


def test_masked_lm_directory_loads_with_its_head_and_matches_transformers(tmp_path):
    hf = hf_bert("BertForMaskedLM")
    hf.save_pretrained(tmp_path / "mlm")
    lm, _ = load_model(tmp_path / "mlm")
    assert lm.config.mlm_head and lm.head_transform is not None
    assert lm.head.weight is lm.embed.weight  # the decoder is tied, its bias is its own
    ids, mask, segments = inputs()
    theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits
    ours, _ = lm(ids, attention_mask=mask, token_type_ids=segments)
    keep = mask.bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-5)
    assert torch.allclose(load_hf_bert(tmp_path / "mlm")(ids)[0], hf(input_ids=ids).logits, atol=1e-5)


def test_bare_bert_model_directory_loads_without_a_head(tmp_path):
    hf = hf_bert("BertModel", seed=1)
    hf.save_pretrained(tmp_path / "bert")
    lm, _ = load_model(tmp_path / "bert")
    assert not lm.config.mlm_head and lm.head_transform is None
    ids, mask, segments = inputs()
    theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=segments).last_hidden_state
    ours, _ = lm.hidden_states(ids, attention_mask=mask, token_type_ids=segments)
    keep = mask.bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-5)


def test_pretraining_save_drops_pooler_and_nsp_head(tmp_path):
    hf = hf_bert("BertForPreTraining", seed=2)
    hf.save_pretrained(tmp_path / "pt")
    lm, _ = load_model(tmp_path / "pt")
    ids, _, _ = inputs()
    assert torch.allclose(lm(ids)[0], hf(input_ids=ids).prediction_logits, atol=1e-5)


def test_weights_copied_from_lmlab_into_transformers_give_the_same_logits():
    from lmlab.models.encoder import hf_bert_names

    torch.manual_seed(3)
    ours = TransformerLM(TransformerConfig.from_preset("bert", vocab_size=61, d_model=32, n_layers=2, n_heads=4,
                                                       d_ff=48, context_length=20)).eval()
    assert sum(p.numel() for p in ours.parameters()) == ours.config.num_parameters()
    with torch.no_grad():
        ours.head.bias.normal_()
        ours.head_transform.norm.weight.add_(torch.randn(32))
    hf = hf_bert("BertForMaskedLM", seed=4)
    state = ours.state_dict()
    copied = {theirs: state[mine] for mine, theirs in hf_bert_names(2, mlm_head=True).items()}
    missing, _ = hf.load_state_dict(copied, strict=False)
    assert set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    ids, _, _ = inputs()
    assert torch.allclose(ours(ids)[0], hf(input_ids=ids).logits, atol=1e-5)


def test_a_bert_directory_with_unknown_tensors_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = hf_bert("BertModel")
    hf.save_pretrained(tmp_path / "b")
    tensors = load_file(str(tmp_path / "b" / "model.safetensors"))
    tensors["encoder.layer.0.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(tmp_path / "b" / "model.safetensors"))
    with pytest.raises(ModelError, match="no place"):
        load_model(tmp_path / "b")
