"""A small vision transformer and a CLIP-style image–text dual encoder.

``PatchEncoder`` is ViT (Dosovitskiy et al., 2021): the image is cut into non-overlapping
``patch_size`` squares, each flattened and projected to ``d_model``, a learned [CLS] vector is put
in front and learned positions added, and pre-norm transformer layers (GPT-2's block without the
causal mask) read them all; the [CLS] output summarises the image, the patch outputs are what a
LLaVA-style projector would map into a language model.

``DualEncoder`` is CLIP (Radford et al., 2021): an image encoder and a text encoder (a bidirectional
``TransformerLM``, mean-pooled) with a linear projection each into one space, where matching
image–caption pairs are pulled together by the symmetric InfoNCE loss
(``lmlab.train.clip``). ``zero_shot`` classifies images by the caption of each class they are
nearest to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, InputError, ModelError
from ..core.validate import check_number
from .config import TransformerConfig
from .encoder import pool
from .neural import unique_tensors
from .norms import make_norm
from .transformer import Block, TransformerLM

DUAL_ENCODER = "clip_dual_encoder"  # config.json model_type of a saved DualEncoder


class PatchEncoder(nn.Module):
    """ViT over ``channels`` × ``image_size`` × ``image_size`` images: ``forward`` → ([CLS] state [B, d],
    patch states [B, N, d])."""

    def __init__(self, image_size: int = 8, patch_size: int = 2, channels: int = 1, *, d_model: int = 64,
                 n_layers: int = 2, n_heads: int = 4, d_ff: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("image_size", image_size), ("patch_size", patch_size), ("channels", channels)):
            check_number(name, value, low=1, integer=True)
        if image_size % patch_size:
            raise ConfigError(f"patch size {patch_size} does not divide the image size {image_size}",
                              "choose a patch size that divides it")
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.args = dict(image_size=image_size, patch_size=patch_size, channels=channels, d_model=d_model,
                         n_layers=n_layers, n_heads=n_heads, d_ff=d_ff, dropout=dropout)
        self.n_patches = (image_size // patch_size) ** 2
        self.config = TransformerConfig.from_preset("gpt2", vocab_size=1, d_model=d_model, n_layers=n_layers,
                                                    n_heads=n_heads, d_ff=d_ff or 4 * d_model, dropout=dropout,
                                                    context_length=self.n_patches + 1, causal=False)
        self.project = nn.Linear(channels * patch_size * patch_size, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.position = nn.Parameter(torch.randn(1, self.n_patches + 1, d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(self.config) for _ in range(n_layers))
        self.norm = make_norm(self.config.norm, d_model, self.config.norm_eps, self.config.bias)

    @property
    def d_model(self) -> int:
        return self.config.d_model

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """Flattened patches [B, N, C·p·p] of images [B, C, H, W] (or [B, H, W] with one channel), row by row."""
        if images.dim() == 3 and self.channels == 1:
            images = images.unsqueeze(1)
        want = (self.channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise InputError(f"images of shape {tuple(images.shape[1:])} given; this encoder reads "
                             f"{want[0]}×{want[1]}×{want[2]} (channels × height × width)",
                             f"resize the images to {want[1]}×{want[2]} pixels or build the encoder for their size")
        p = self.patch_size
        cut = F.unfold(images.float(), kernel_size=p, stride=p)  # [B, C·p·p, N]
        return cut.transpose(1, 2)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.project(self.patches(images.to(self.position.device)))
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        ctx = {"rope": None, "allowed": None, "bias": None, "causal": False}
        for block in self.blocks:
            x = block(x, ctx, None, True)
        x = self.norm(x)
        return x[:, 0], x[:, 1:]


class DualEncoder(nn.Module):
    """CLIP: images and texts projected into one ``dim``-dimensional space (see the module docstring)."""

    def __init__(self, image: PatchEncoder, text: TransformerLM, dim: int = 64) -> None:
        super().__init__()
        if text.config.causal:
            raise ConfigError("the text encoder of a dual encoder reads whole captions", "use a bert-preset model")
        check_number("dim", dim, low=1, integer=True)
        self.image, self.text = image, text
        self.image_projection = nn.Linear(image.d_model, dim, bias=False)
        self.text_projection = nn.Linear(text.config.d_model, dim, bias=False)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image(images)[0])

    def embed_texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.text.hidden_states(ids.to(self.text.device), attention_mask=mask.long().to(self.text.device))
        return self.text_projection(pool(hidden, mask, "mean"))

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_images(images), self.embed_texts(ids, mask)

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(config.json, tensors) of a model directory: both encoders' settings and the projection width."""
        config = {"model_type": DUAL_ENCODER, "image": dict(self.image.args), "text": self.text.config.to_dict(),
                  "dim": self.image_projection.out_features}
        return config, unique_tensors(self.state_dict())

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> DualEncoder:
        """The dual encoder a ``to_state`` pair describes, in eval mode."""
        if config.get("model_type") != DUAL_ENCODER:
            raise ModelError(f"a {config.get('model_type')!r} model is not a CLIP dual encoder",
                             "pass a directory written by lmlab clip")
        model = cls(PatchEncoder(**config["image"]), TransformerLM(TransformerConfig.from_dict(config["text"])),
                    dim=config["dim"])
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        loaded = {model.state_dict()[k].data_ptr() for k in tensors}
        if unexpected or any(model.state_dict()[k].data_ptr() not in loaded for k in missing):  # tied ones are fine
            raise ModelError(f"the weights do not match config.json ({', '.join((missing + unexpected)[:4])})",
                             "the directory is damaged or its files come from different models")
        return model.eval()


@torch.no_grad()
def zero_shot(model: DualEncoder, images: torch.Tensor, class_texts: Sequence[tuple[torch.Tensor, torch.Tensor]]
              ) -> torch.Tensor:
    """The class of each image [B]: the one whose captions (``class_texts``: per class, ids and mask of
    one or more captions, their unit embeddings averaged, as CLIP's prompt ensembles) are nearest."""
    was = model.training
    model.eval()
    try:
        classes = torch.stack([F.normalize(F.normalize(model.embed_texts(ids, mask), dim=-1).mean(0), dim=-1)
                               for ids, mask in class_texts])
        return (F.normalize(model.embed_images(images), dim=-1) @ classes.T).argmax(-1)
    finally:
        model.train(was)
