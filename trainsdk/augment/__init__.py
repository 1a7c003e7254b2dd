"""Data augmentation. (The affine/intensity/lesion-synthesis suite arrives with the training issue.)"""
from .basic import random_translate

__all__ = ["random_translate"]
