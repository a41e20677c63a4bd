"""skvqgnn: VQ-GNN (Ding et al., NeurIPS 2021) as scikit-learn estimators."""

from . import _version
from .classifier import VQGNNClassifier
from .graph import Graph, NodeSet, PairSet
from .link import VQGNNLinkPredictor
from .training import Callback, FitLoop, Task

#: The installed version of skvqgnn, a string such as ``"0.1.0"``.
__version__ = _version.__version__

__all__ = [
    "Callback",
    "FitLoop",
    "Graph",
    "NodeSet",
    "PairSet",
    "Task",
    "VQGNNClassifier",
    "VQGNNLinkPredictor",
    "__version__",
]
