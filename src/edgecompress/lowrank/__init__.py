"""Low-rank factorization: SVD of Linear and 1×1 convs, Tucker-2 or CP of k×k convs, with rank selection
(by ratio, retained energy or parameter budget) kept apart from the factorizations."""

from .config import FactorizeConfig
from .factorize import FactorizedLayer, FactorizeResult, factorize
from .rank import budget_rank, energy_rank, ratio_rank, select_rank

__all__ = ["FactorizeConfig", "FactorizeResult", "FactorizedLayer", "factorize", "select_rank", "ratio_rank",
           "energy_rank", "budget_rank"]
