"""Neural architecture search: efficient blocks and a builder (N1), differentiable architecture search (N2).

The search space (``ops``, ``cells``), the strategy (``darts``: bilevel optimisation of α) and the evaluation
(``train_derived``) are kept apart, so that each can be swapped alone."""

from .blocks import DepthwiseSeparable, InvertedResidual, MBConv, SqueezeExcite
from .builder import BlockSpec, MobileNet, build_mobile_net
from .cells import DerivedNetwork, SearchNetwork
from .darts import DartsConfig, DartsResult, bilevel_step, derive, search, search_architecture, train_derived
from .genotype import Genotype, parse_alphas
from .ops import DEFAULT_OPS, OPERATIONS

__all__ = ["DepthwiseSeparable", "InvertedResidual", "MBConv", "SqueezeExcite", "BlockSpec", "MobileNet",
           "build_mobile_net", "SearchNetwork", "DerivedNetwork", "DartsConfig", "DartsResult", "bilevel_step",
           "derive", "search", "search_architecture", "train_derived", "Genotype", "parse_alphas", "DEFAULT_OPS",
           "OPERATIONS"]
