"""Hub cards: the model card, the dataset card and the Space README, rendered and checked offline."""

from .cards import (
    CITATION,
    NOT_A_MEDICAL_DEVICE,
    CardError,
    render_dataset_card,
    render_model_card,
    render_space_readme,
    validate_card,
)

__all__ = [
    "CITATION",
    "NOT_A_MEDICAL_DEVICE",
    "CardError",
    "render_dataset_card",
    "render_model_card",
    "render_space_readme",
    "validate_card",
]
