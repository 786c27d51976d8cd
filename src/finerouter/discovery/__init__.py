"""Stage 1: fine-grained task discovery -- model rankings, rank-biased overlap, the kNN prompt graph,
iterated Leiden clustering, MRR rank fusion, adaptive candidate models and the task catalog.

Importing this package is cheap: faiss, igraph and leidenalg load inside the functions that need them.
"""

from finerouter.discovery.catalog import OthersGroup, Task, TaskCatalog
from finerouter.discovery.discovery import TaskDiscovery
from finerouter.discovery.graph import build_graph, knn_recall, knn_search
from finerouter.discovery.ranking import rank_models, rank_order
from finerouter.discovery.rbo import rank_biased_overlap

__all__ = [
    "OthersGroup",
    "Task",
    "TaskCatalog",
    "TaskDiscovery",
    "build_graph",
    "knn_recall",
    "knn_search",
    "rank_biased_overlap",
    "rank_models",
    "rank_order",
]
