"""NFT: the Neural Functional Transformer (weight-space self-attention blocks), invariant or equivariant."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from nfn_lab.layers import HNPPool, LearnedPosEmbedding, LearnedScale, NPPool, Pointwise, SimpleLayerNorm, TupleOp
from nfn_lab.layers.attention import NPAttention
from nfn_lab.models.blocks import Backbone, mlp
from nfn_lab.weightspace import NetworkSpec, WeightSpaceFeatures

__all__ = ["NFT", "NFTBlock"]


class NFTBlock(nn.Module):
    """Pre-norm transformer block on weight-space features: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

    The MLP is two pointwise NF-layers (``channels -> 2 channels -> channels``) with a ReLU.
    """

    def __init__(self, network_spec: NetworkSpec, channels: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = SimpleLayerNorm(network_spec, channels)
        self.attn = NPAttention(network_spec, channels, num_heads=num_heads, dropout=dropout)
        self.norm2 = SimpleLayerNorm(network_spec, channels)
        self.mlp = nn.Sequential(
            Pointwise(network_spec, channels, 2 * channels),
            TupleOp(nn.ReLU()),
            Pointwise(network_spec, 2 * channels, channels),
            TupleOp(nn.Dropout(dropout)),
        )

    def forward(self, x: WeightSpaceFeatures) -> WeightSpaceFeatures:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class NFT(Backbone):
    """Neural Functional Transformer (Zhou et al., 2023).

    ``Pointwise lift -> [learned io/layer embeddings] -> NFT blocks -> head``, where the head is
    invariant (pool + MLP, for classification/regression) or equivariant (pointwise map to
    ``out_channels`` + learned scale, for editing).

    Args:
        network_spec: the weight space.
        channels: width of the blocks.
        num_blocks: number of transformer blocks.
        num_heads: attention heads (must divide ``channels``).
        dropout: attention and MLP dropout.
        pos_embedding: add learned layer/input/output embeddings (makes the model HNP- rather
            than NP-symmetric; pooling follows).
        head: ``"invariant"`` or ``"equivariant"``.
        out_features: outputs of the invariant head.
        head_hidden, head_layers: the invariant head's MLP.
        out_channels, out_scale: the equivariant head's output channels and initial scale.
        sigmoid: squash the invariant output into (0, 1).
        normalize: standardize inputs with stored statistics.
        in_channels: channels of the input features.
    """

    def __init__(
        self,
        network_spec: NetworkSpec,
        channels: int = 64,
        num_blocks: int = 4,
        num_heads: int = 8,
        dropout: float = 0.1,
        pos_embedding: bool = True,
        head: Literal["invariant", "equivariant"] = "invariant",
        out_features: int = 10,
        head_hidden: int = 1000,
        head_layers: int = 2,
        out_channels: int = 1,
        out_scale: float = 0.01,
        sigmoid: bool = False,
        normalize: bool = False,
        in_channels: int = 1,
    ) -> None:
        super().__init__(network_spec, normalize, in_channels)
        if head not in ("invariant", "equivariant"):
            raise ValueError(f"unknown head {head!r}; use 'invariant' or 'equivariant'.")
        layers: list[nn.Module] = [Pointwise(network_spec, in_channels, channels)]
        if pos_embedding:
            layers.append(LearnedPosEmbedding(network_spec, channels))
        layers += [NFTBlock(network_spec, channels, num_heads, dropout) for _ in range(num_blocks)]
        layers.append(SimpleLayerNorm(network_spec, channels))
        self.blocks = nn.Sequential(*layers)
        self.head_kind = head
        if head == "invariant":
            pool_cls = HNPPool if pos_embedding else NPPool
            self.head = nn.Sequential(
                pool_cls(network_spec),
                nn.Flatten(start_dim=1),
                mlp(
                    channels * pool_cls.get_num_outs(network_spec), head_hidden, head_layers, out_features, 0.0, sigmoid
                ),
            )
        else:
            self.head = nn.Sequential(
                Pointwise(network_spec, channels, out_channels), LearnedScale(network_spec, out_scale)
            )

    def forward(self, wsfeat: WeightSpaceFeatures) -> Tensor | WeightSpaceFeatures:
        return self.head(self.blocks(self.prepare(wsfeat)))
