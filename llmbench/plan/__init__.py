"""Capacity planning: an analytical memory and throughput model, calibrated by measurement."""
