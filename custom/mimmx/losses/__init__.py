"""The training objective as composable terms: a method is a list of :class:`LossTerm` that the trainer sums.

See :mod:`mimmx.losses.base` for the interface and :mod:`mimmx.methods` for the lists each benchmarked method uses.
"""

from mimmx.losses.adversary import FactorAdversaryTerm
from mimmx.losses.base import LossTerm, StepContext
from mimmx.losses.conditional_mi import ConditionalDecisionMI, ConditionalFactorMI
from mimmx.losses.decision_gap import ConditionalDecisionGap
from mimmx.losses.group_dro import GroupDROCrossEntropy
from mimmx.losses.head_ce import HeadCrossEntropy
from mimmx.losses.pairwise_mi import PairwiseMITerm
from mimmx.losses.queue import FeatureQueue

__all__ = [
    "ConditionalFactorMI",
    "ConditionalDecisionMI",
    "ConditionalDecisionGap",
    "LossTerm",
    "StepContext",
    "HeadCrossEntropy",
    "GroupDROCrossEntropy",
    "PairwiseMITerm",
    "FactorAdversaryTerm",
    "FeatureQueue",
]
