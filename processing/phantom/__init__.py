"""The retina phantom: paired CFP + OCT B-scan images rendered from ground-truth biomarkers.

>>> from processing.phantom import RetinaPhantom
>>> phantom = RetinaPhantom(seed=0, n=100)
>>> sample = phantom[0]  # a row of the GROK dataset schema
>>> dataset = phantom.to_dataset()  # a datasets.Dataset
"""

from .distributions import Subject
from .phantom import GroundTruth, RetinaPhantom, phantom_dataset

__all__ = ["GroundTruth", "RetinaPhantom", "Subject", "phantom_dataset"]
