"""Renderers. Every one works from the single results frame (judge/runs.py)."""
