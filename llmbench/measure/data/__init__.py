"""Training data for the worker: a batch source per rank.

Batches are built before timing starts where possible; what a source still does
per step (reading a packed corpus) is timed separately as data time.
"""
