"""Edge-level circuit discovery (in progress, issue 22): the head-granularity graph of a
standard-layout model, its forward with one input per receiver, and edge scores — exact edge
patching, EAP and EAP-IG."""

from interp_icl.circuits.graph import Edge, Graph, standard_graph
from interp_icl.circuits.scores import eap_scores, exact_scores

__all__ = ["Edge", "Graph", "eap_scores", "exact_scores", "standard_graph"]
