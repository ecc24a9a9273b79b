"""edgecompress: compress trained PyTorch models for edge devices and measure the real artifact.

One verb per technique, each taking a frozen config, and ``compress`` on top:

    from edgecompress import compress, quantize, prune, QuantConfig, PruneConfig
"""

from importlib.metadata import version as _version

__version__ = _version("edgecompress")

from .clustering import ClusterConfig, cluster  # noqa: E402
from .datasets import Dataset, as_dataset, load_dataset  # noqa: E402
from .distillation import DistillConfig, distill, make_student  # noqa: E402
from .errors import (  # noqa: E402
    DataError,
    EdgeCompressError,
    EdgeCompressWarning,
    ExportError,
    IntegrityError,
    MissingDependencyError,
    ModelLoadError,
    RecipeError,
    UnsupportedError,
)
from .lowrank import FactorizeConfig, factorize  # noqa: E402
from .model_io import load_model  # noqa: E402
from .pipeline import CompressionResult, MeasureSettings, compress  # noqa: E402
from .pruning import PruneConfig, StructuredPruneConfig, prune, prune_structured  # noqa: E402
from .quantization import QuantConfig, quantize  # noqa: E402
from .recipe import Recipe, load_recipe  # noqa: E402

__all__ = [
    "__version__", "compress", "CompressionResult", "MeasureSettings", "quantize", "QuantConfig", "prune",
    "PruneConfig", "prune_structured", "StructuredPruneConfig", "distill", "DistillConfig", "make_student",
    "cluster", "ClusterConfig", "factorize", "FactorizeConfig", "load_recipe", "Recipe", "load_dataset",
    "as_dataset", "Dataset", "load_model",
    "EdgeCompressError", "EdgeCompressWarning", "RecipeError", "DataError", "ModelLoadError", "UnsupportedError",
    "ExportError", "IntegrityError", "MissingDependencyError",
]
