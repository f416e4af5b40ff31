"""nfbook: normalizing flows with TensorFlow Probability, the companion library of the book."""

from nfbook import data, plot
from nfbook.bijectors import affine, batch_norm_mode, iaf, maf, nice, permute, realnvp
from nfbook.model import FlowModel, NonFiniteLossError
from nfbook.notebook import glue
from nfbook.saving import load
from nfbook.seed import set_seed

__all__ = [
    "FlowModel",
    "NonFiniteLossError",
    "affine",
    "batch_norm_mode",
    "data",
    "glue",
    "iaf",
    "load",
    "maf",
    "nice",
    "permute",
    "plot",
    "realnvp",
    "set_seed",
]

__version__ = "0.1.0"
