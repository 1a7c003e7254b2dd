"""Built-in datasets: generated or shipped inside installed packages, never downloaded."""
from .digits import DigitsSplit, load_digits

__all__ = ["load_digits", "DigitsSplit"]
