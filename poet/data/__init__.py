"""Datasets for POET: COCO-format loading and the synthetic-people generator."""
