"""NF-layers: equivariant and invariant maps on weight-space features."""

from nfn_lab.layers.attention import CrossAttnDecoder, CrossAttnEncoder, NPAttention
from nfn_lab.layers.encoding import GaussianFourierFeatureTransform, IOSinusoidalEncoding, LearnedPosEmbedding
from nfn_lab.layers.linear import ChannelLinear, HNPLinear, NPLinear, Pointwise
from nfn_lab.layers.misc import FlattenWeights, LearnedScale, ResBlock, StatFeaturizer, TupleOp, UnflattenWeights
from nfn_lab.layers.norm import ChannelDropout, ChannelLayerNorm, ParamLayerNorm, SimpleLayerNorm
from nfn_lab.layers.pooling import HNPPool, NPPool

__all__ = [
    "ChannelDropout",
    "ChannelLayerNorm",
    "ChannelLinear",
    "CrossAttnDecoder",
    "CrossAttnEncoder",
    "FlattenWeights",
    "GaussianFourierFeatureTransform",
    "HNPLinear",
    "HNPPool",
    "IOSinusoidalEncoding",
    "LearnedPosEmbedding",
    "LearnedScale",
    "NPAttention",
    "NPLinear",
    "NPPool",
    "ParamLayerNorm",
    "Pointwise",
    "ResBlock",
    "SimpleLayerNorm",
    "StatFeaturizer",
    "TupleOp",
    "UnflattenWeights",
]
