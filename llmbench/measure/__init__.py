"""Measure: run every case in its own process group and record what it did.

torch, DeepSpeed and pynvml are imported only on the rank side and in the samplers.
"""
