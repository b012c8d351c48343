"""Ultrametric Feature Fields (UFF): view-consistent hierarchical 3D segmentation from 2D mask hierarchies."""
