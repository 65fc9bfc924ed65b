"""Analysis passes (REFERENCE §1-2): each takes a hooked model and token ids ``[B, T]`` and returns a
`PassResult` with a long ``.table`` (unit, metric, mean, stderr, n, labels) and a JSON-able ``.summary``.

copier       layer-1 heads: attention mass per offset, causal check, copied offsets
selector     which offsets the layer-2 query/key features depend on; gih p_S
classifier   layer-2 attention vs parent matches, effective inverse temperature, closest strategy
head_scores  previous-token / duplicate / induction scores (TransformerLens conventions), OV, K-comp
theory       χ²-MI and the modified criterion (authors' reference code) over the task prior
pipeline     all passes on one model; dynamics: the order roles form in, over checkpoints

Nothing here touches the file system: `interp_icl.runs` analyses a run's checkpoints.
"""

from interp_icl.analysis.classifier import classifier
from interp_icl.analysis.copier import copier
from interp_icl.analysis.head_scores import head_scores
from interp_icl.analysis.pipeline import PASSES, Analysis, AnalysisSettings, analyze_model
from interp_icl.analysis.result import PassResult
from interp_icl.analysis.selector import selector
from interp_icl.analysis.theory import theory

__all__ = [
    "PASSES",
    "Analysis",
    "AnalysisSettings",
    "PassResult",
    "analyze_model",
    "classifier",
    "copier",
    "head_scores",
    "selector",
    "theory",
]
