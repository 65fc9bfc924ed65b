"""Edge-level circuit discovery (issue 22): the edge graph of a model (head granularity for the
standard family, copier heads / FFN features / classifier inputs for the gih family), edge scores
(exact edge patching, EAP, EAP-IG), circuits from them (top-n, greedy pruning), faithfulness
curves and the GIH hypothesis as edges."""

from interp_icl.circuits.gih import gih_graph
from interp_icl.circuits.graph import Edge, Graph, standard_graph
from interp_icl.circuits.runner import circuit_runner, model_graph
from interp_icl.circuits.scores import eap_scores, exact_scores

__all__ = ["Edge", "Graph", "circuit_runner", "eap_scores", "exact_scores", "gih_graph", "model_graph", "standard_graph"]
