"""The built-in demo: a seeded synthetic-to-real street-scene shift and the whole method run on it."""
from .synthetic import generate_demo_data

__all__ = ["generate_demo_data"]
