"""Descriptions <-> networks, and model files (.npz, no pickle)."""
