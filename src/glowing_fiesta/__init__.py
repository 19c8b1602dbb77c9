"""Glowing Fiesta: a self-hosted metrics service in the spirit of StatHat."""

__version__ = "0.1.0"
