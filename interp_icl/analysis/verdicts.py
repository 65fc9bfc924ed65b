"""Verdict rows: each headline measurement beside the truth it should match, and whether it does.

`verdict_rows(summaries, roles, order)` is the one place where the role verdicts are put into
words. The console (`interp_icl.analysis.console.verdict_table`), the HTML report and
`Analysis.headline()` all format these rows; none words a verdict itself.

Inputs are plain summaries (dicts as stored in JSON): ``summaries`` {pass name: summary} of an
analysis (copier, selector, classifier, theory), ``roles`` the role experiments' results {role:
`interp_icl.roles.RoleResult`} (read through their typed checks) or None, ``order`` the stage order of
`interp_icl.analysis.dynamics.stage_order` or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from interp_icl.analysis.result import set_text


@dataclass(frozen=True)
class VerdictRow:
    """One checked quantity. `holds`: True / False, or None when it cannot be decided."""

    key: str  # stable identifier, e.g. "selector_selected_set"
    quantity: str  # what is compared, in words
    measured: str  # what the model does
    expected: str  # the truth (task parents, theory, paper)
    holds: bool | None
    yes: str = "yes"  # words for holds = True / False / None
    no: str = "no"
    undecided: str = "–"

    @property
    def verdict(self) -> str:
        """The verdict in words: `yes`, `no` or `undecided`."""
        return self.undecided if self.holds is None else self.yes if self.holds else self.no


def verdict_rows(
    summaries: dict[str, dict[str, Any]],
    roles: dict[str, Any] | None = None,  # {role: RoleResult}
    order: dict[str, Any] | None = None,
) -> list[VerdictRow]:
    """The verdict rows of an analysis (+ role experiments, + stage order), in report order."""
    rows: list[VerdictRow] = []
    for name, summary in summaries.items():  # e.g. a 1-layer model: no two-layer circuit exists
        if "skipped" in summary:
            rows.append(VerdictRow(f"{name}_skipped", f"{name}: not measured", summary["skipped"], "–", None))
    summaries = {name: s for name, s in summaries.items() if "skipped" not in s}
    parents = None
    if "copier" in summaries:
        c = summaries["copier"]
        parents = c.get("true_parents")
        heads = ", ".join(
            f"{u} r={h['attn_offset']} ({h['sharpness']:.2f})"
            for u, h in c["heads"].items()
            if h["is_copier"]
        )
        measured = (
            f"attention offsets {set_text(c['copied_attn_offsets'])} [{heads or 'no copier head'}]; "
            f"as parent offsets {set_text(c['copied_parent_offsets'])}"
            + (
                f" + {set_text(c['residual_parent_offsets'])} via the residual"
                if c.get("residual_parent_offsets")
                else ""
            )
        )
        rows.append(
            VerdictRow(
                "copier_covers_parents",
                "copier: copied offsets (cover the parents?)",
                measured,
                set_text(parents),
                c.get("parents_covered"),
            )
        )
    if "selector" in summaries:
        s = summaries["selector"]
        measured = (
            f"{set_text(s['selected_offsets'])} ({s.get('best_unit', '')}, margin {s['margin']:.2f}, "
            f"{'confident' if s['confident'] else 'not confident'})"
        )
        rows.append(
            VerdictRow(
                "selector_selected_set",
                "selector: selected set",
                measured,
                set_text(parents),
                s.get("selected_equals_parents"),
            )
        )
    if "classifier" in summaries:
        k = summaries["classifier"]
        kl = k["kl_model_to_strategy"]
        measured = (
            f"{k['closest_strategy']} (KL {kl[k['closest_strategy']]:.4f}); closest S-gram "
            f"{k['closest_sgram']} (KL {kl[k['closest_sgram']]:.4f})"
            + ("" if k.get("closest_is_resolved", True) else "; not resolved from the runner-up")
        )
        truth = ("–" if parents is None else f"{set_text(parents)}-gram") + (
            f"; Bayes = {k['bayes_is']}" if k.get("bayes_is") else ""
        )
        rows.append(
            VerdictRow(
                "classifier_closest_strategy",
                "classifier: closest strategy",
                measured,
                truth,
                k.get("closest_sgram_is_parents"),
            )
        )
    if "theory" in summaries:
        t = summaries["theory"]
        for name, predicted in t["predicted"].items():
            rows.append(
                VerdictRow(
                    f"theory_{name}_agrees",
                    f"theory: S* of {t['criteria'][name]}",
                    set_text(predicted),
                    f"model selected {set_text(t.get('model_selected'))}",
                    (t.get("agrees") or {}).get(name),
                )
            )
    if roles is not None:
        for role, result in roles.items():
            if result.not_applicable is not None:
                measured = result.not_applicable
            else:
                failed = [f"{c.name}: {c.evidence}" for c in result.checks if c.holds is False]
                measured = "; ".join(failed) if failed else "every check holds"
                if result.other_heads:
                    measured += "; other heads that matter: " + ", ".join(
                        f"{h.unit} ({h.effect:+.3f} nats)" for h in result.other_heads
                    )
            rows.append(
                VerdictRow(
                    f"role_{role}",
                    f"role experiment: {role}",
                    measured,
                    "holds",
                    result.holds,
                    yes="holds",
                    no="does not hold",
                )
            )
    if order is not None and order["order"]:
        halves = ", ".join(f"{role} {step}" for role, step in order["half_rise_step"].items())
        rows.append(
            VerdictRow(
                "stage_order_matches_paper",
                "order in which roles form (half-rise step)",
                f"{' → '.join(order['order'])} ({halves})",
                "paper (gih): " + " → ".join(order["paper_order"]),
                order["matches_paper_order"],
                undecided="undetermined (ties)" if order["ties"] else "–",
            )
        )
    return rows
