r"""The permutations between the layers of nfbook's flows: the default scheme, the scheme of
nfbook 0.1.0 (for the files it saved), and user-given permutations.

Layer :math:`k` of a stack sees the coordinates in an order; the permutation between layers
:math:`k - 1` and :math:`k` (a :class:`tfb.Permute` towards the data) sets position :math:`p`
of layer :math:`k`'s input to position ``perm[p]`` of layer :math:`k - 1`'s output.

Default scheme (``SCHEME = 2``):

- autoregressive layers (MAF, IAF): the reversal :math:`p \mapsto D - 1 - p` between every two
  layers, so consecutive layers use opposite orders (Papamakarios et al. 2017). Every layer
  transforms every coordinate, each layer makes every pair of coordinates interact (one
  depends on the other), and from two layers on every output depends on every base
  coordinate.
- coupling layers keeping the first :math:`d` positions: the rotation
  :math:`p \mapsto (p + d) \bmod D` between every two layers. The :math:`d` coordinates a
  layer keeps are all transformed by the next one (for even :math:`D` the two halves
  alternate; for odd :math:`D` consecutive kept sets are disjoint and the rotation moves the
  coordinate that is transformed twice), so every coordinate is transformed in at least one
  of any two consecutive layers. From three layers on for even :math:`D`, four for odd
  :math:`D`, every output coordinate depends on every base coordinate (the Jacobian
  :math:`\partial x / \partial u` has no structural zero); the coupling builders' default of
  four layers meets this for every :math:`D \geq 2`.

Scheme 1 (nfbook 0.1.0): the reversal for :math:`D = 2`, otherwise a permutation drawn per
layer from ``numpy.random.default_rng([seed, layer])``, not the identity; with it a coupling
stack could keep a coordinate in every layer. Its files record only the seed: they are
rebuilt with :func:`legacy_permutations`.
"""

from __future__ import annotations

__all__ = [
    "SCHEME",
    "PermutationSpec",
    "default_permutations",
    "legacy_permutations",
    "resolve_permutations",
]

from collections.abc import Sequence

import numpy as np

from nfbook.checks import check_permutation

SCHEME = 2
# What the builders take as ``permutation``: None, "random", one permutation, or one per gap.
PermutationSpec = str | Sequence[int] | Sequence[Sequence[int]] | None


def default_permutations(ndim: int, num_layers: int,
                         num_masked: int | None = None) -> list[np.ndarray]:
    r"""The default permutations between ``num_layers`` layers (scheme 2).

    Parameters
    ----------
    ndim : int
        Event size :math:`D \geq 1`.
    num_layers : int
        Number of flow layers :math:`L`.
    num_masked : int, optional
        Coupling layers keeping their first ``num_masked`` positions :math:`d`: the rotation
        :math:`p \mapsto (p + d) \bmod D`. ``None``: autoregressive layers, the reversal.

    Returns
    -------
    list of np.ndarray
        :math:`L - 1` int32 permutations, that between layers ``k - 1`` and ``k`` at index
        ``k - 1``; none when :math:`D = 1`.

    Examples
    --------
    >>> [p.tolist() for p in default_permutations(4, 3)]
    [[3, 2, 1, 0], [3, 2, 1, 0]]
    >>> [p.tolist() for p in default_permutations(5, 2, num_masked=2)]
    [[2, 3, 4, 0, 1]]
    """
    if ndim < 2:
        return []
    positions = np.arange(ndim)
    perm = positions[::-1] if num_masked is None else (positions + num_masked) % ndim
    return [perm.astype(np.int32) for _ in range(num_layers - 1)]


def legacy_permutations(ndim: int, num_layers: int, seed: int) -> list[np.ndarray]:
    """The permutations of scheme 1 (nfbook 0.1.0) between ``num_layers`` layers.

    Parameters
    ----------
    ndim : int
        Event size.
    num_layers : int
        Number of flow layers.
    seed : int
        The seed the builder was given.

    Returns
    -------
    list of np.ndarray
        ``num_layers - 1`` int32 permutations; none when ``ndim == 1``.

    Examples
    --------
    >>> [p.tolist() for p in legacy_permutations(2, 3, seed=0)]
    [[1, 0], [1, 0]]
    """
    if ndim < 2:
        return []
    if ndim == 2:
        return [np.array([1, 0], dtype=np.int32) for _ in range(num_layers - 1)]
    perms = []
    for layer in range(1, num_layers):
        rng = np.random.default_rng([seed, layer])
        perm = rng.permutation(ndim)
        while not np.any(perm != np.arange(ndim)):
            perm = rng.permutation(ndim)
        perms.append(perm.astype(np.int32))
    return perms


def resolve_permutations(permutation: PermutationSpec, ndim: int, num_layers: int,
                         num_masked: int | None = None) -> list[np.ndarray]:
    """The permutations between ``num_layers`` layers, from a builder's ``permutation``.

    Parameters
    ----------
    permutation : None, sequence of int, or sequence of sequences of int
        ``None`` for the default scheme (:func:`default_permutations`); one permutation of
        ``0, ..., ndim - 1`` for the same one between every two layers; or ``num_layers - 1``
        permutations, one per gap between layers (base side first), as a saved record holds.
    ndim : int
        Event size.
    num_layers : int
        Number of flow layers.
    num_masked : int, optional
        As in :func:`default_permutations`.

    Returns
    -------
    list of np.ndarray
        ``num_layers - 1`` int32 permutations (none when ``ndim == 1``).

    Raises
    ------
    ValueError
        If a permutation is invalid, or a list of them does not have ``num_layers - 1``.

    Examples
    --------
    >>> [p.tolist() for p in resolve_permutations([[1, 0], [0, 1]], 2, 3)]
    [[1, 0], [0, 1]]
    """
    if ndim < 2:
        return []
    if permutation is None:
        return default_permutations(ndim, num_layers, num_masked)
    items = list(permutation)
    if not items and num_layers == 1:  # the record of a single layer
        return []
    if items and all(isinstance(p, Sequence | np.ndarray) and not isinstance(p, str)
                     for p in items):
        if len(items) != num_layers - 1:
            raise ValueError(f"`permutation` as a list of permutations must hold one per gap "
                             f"between the {num_layers} layers ({num_layers - 1}), got "
                             f"{len(items)}.")
        return [check_permutation(p, ndim) for p in items]
    return [check_permutation(items, ndim)] * (num_layers - 1)
