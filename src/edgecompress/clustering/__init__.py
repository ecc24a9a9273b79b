"""Weight sharing / clustering (L3): k-means codebooks per layer or per output channel, fine-tuning with shared
centroids, and (in export/onnx_codebook) an artifact that stores packed indices plus the codebook."""

from .cluster import ClusteredTraining, cluster
from .config import ClusterConfig
from .kmeans import INITS, kmeans_1d

__all__ = ["ClusterConfig", "ClusteredTraining", "cluster", "kmeans_1d", "INITS"]
