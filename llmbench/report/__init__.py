"""Renderers. Every one works from the single results frame (report/frame.py)."""
