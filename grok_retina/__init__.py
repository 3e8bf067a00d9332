"""grok-retina application layer: stage I instructions, training, inference, evaluation and publishing."""

__version__ = "0.1.0"
