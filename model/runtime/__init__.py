"""Serving without TensorFlow: decode and preprocess photos, run LiteRT models, rank and gate.

numpy, Pillow and `ai_edge_litert` only (an import-linter contract checks it): a CPU worker
answers photos with this package alone; the rest of `model/` (TensorFlow) builds what it runs.
"""
