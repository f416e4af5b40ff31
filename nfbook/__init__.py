"""nfbook: normalizing flows with TensorFlow Probability, the companion library of the book."""

from nfbook import animation, conditional, data, plot, reverse_kl, timing, toy_densities
from nfbook.bijectors import affine, batch_norm_mode, iaf, maf, nice, permute, realnvp
from nfbook.continuous import ffjord
from nfbook.flow_check import FlowCheckError, check_flow
from nfbook.flow_matching import FlowMatching
from nfbook.model import FlowModel
from nfbook.nan_guard import NonFiniteLossError
from nfbook.notebook import glue
from nfbook.saving import load
from nfbook.seed import set_seed
from nfbook.splines import nsf

__all__ = [
    "FlowCheckError",
    "FlowMatching",
    "FlowModel",
    "NonFiniteLossError",
    "affine",
    "animation",
    "batch_norm_mode",
    "check_flow",
    "conditional",
    "data",
    "ffjord",
    "glue",
    "iaf",
    "load",
    "maf",
    "nice",
    "nsf",
    "permute",
    "plot",
    "realnvp",
    "reverse_kl",
    "set_seed",
    "timing",
    "toy_densities",
]

__version__ = "0.2.0"
