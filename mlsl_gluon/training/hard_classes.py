"""Hard-class crops of the released code (released profile; off in the paper, SPEC section 9).

After the pseudo-labels of round r, the released code takes the class sizes N_c of its threshold
lists (the sampled argmax pixels plus the prepended 0 of each occurring class, 0 for a class that
never occurs; our ``stats.json`` ``argmax_pixels_per_class``) and picks

- ``mine_id_priority``: every class whose share N_c / sum(N) is below ``mine_thresh`` (0.001),
- ``mine_id``: the ``mine_id_number`` (3) classes of smallest share,

(engrjavediqbal/MLSL ``issegm/solve_ST1.py`` L998-1005, ``issegm1/solve_ST.py`` L1048-1051; CBST
``issegm/solve_ST.py`` L929-932). Round r's training crops are then centred on a pixel of one of
them with probability ``mine_port`` (0.8): a class drawn uniformly among the priority classes
present in the image away from its border if there is one, else among the ``mine_id`` ones
present, then a pixel of it (MLSL ``issegm/data.py`` L276-300;
:func:`mlsl_gluon.data.transforms.hard_class_window`). :class:`mlsl_gluon.data.TrainTransform`
receives ``rarest`` as ``hard_class`` and ``priority`` as ``hard_class_priority``.

The two sets nest: with three or more priority classes the three rarest are among them, else
the priority classes are among the three rarest; ``ids``, the larger of the two, is what is
logged. The released ``mine_id_priority`` lists its classes by id (``np.nonzero``), ours by
share: the class is drawn uniformly, so the order does not change what is drawn.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HardClasses:
    """The classes of one round's hard-class crops (train ids)."""

    priority: tuple  # share below the threshold (released mine_id_priority), ascending share
    rarest: tuple  # the smallest shares (released mine_id), ascending share

    @property
    def ids(self):
        """Priority classes and the rarest ones, rarest first (the larger of the two sets)."""
        return self.priority if len(self.priority) >= len(self.rarest) else self.rarest


def select_hard_classes(class_sizes, share=0.001, number=3):
    """The hard classes of a round from its pseudo-label class sizes.

    Parameters
    ----------
    class_sizes : sequence of int
        N_c per class (``stats.json`` ``argmax_pixels_per_class``).
    share : float
        Classes whose N_c / sum(N) is below this are priority classes (released ``mine_thresh``).
    number : int
        How many of the smallest shares are taken (released ``mine_id_number``).

    Returns
    -------
    HardClasses
        Ties in share are ordered by class id (the released ``np.argsort`` leaves them
        unspecified). No class is hard when no pixel was counted at all.
    """
    sizes = np.asarray(class_sizes, dtype=np.float64)
    if sizes.ndim != 1 or (sizes < 0).any():
        raise ValueError(f"class sizes must be a 1-D array of counts >= 0, got {class_sizes!r}")
    total = sizes.sum()
    if total == 0:
        return HardClasses((), ())
    fraction = sizes / total
    order = np.argsort(fraction, kind="stable")
    priority = tuple(int(c) for c in order if fraction[c] < share)
    return HardClasses(priority, tuple(int(c) for c in order[:number]))
