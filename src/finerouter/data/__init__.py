"""Routing data: the dataset type, readers for our layout and peers' layouts, splits, synthetic data."""

from finerouter.data.dataset import RoutingDataset, split_indices

__all__ = ["RoutingDataset", "split_indices"]
