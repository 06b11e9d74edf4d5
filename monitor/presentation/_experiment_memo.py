"""The A/B experiment's part of the decision memo: the pre-registration beside what was
achieved, the effect sizes, CUPED, the checks, subgroups, non-inferiority, cost, the
recommendation and what the sign-off block says of it, from the view's ``analysis``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._format import count, interval, number, rfc3339
from ._memo import Heading, Memo, Paragraph, Table

__all__ = ["analysis_section", "sign_off"]


def _cell(row: Mapping[str, Any] | None, form: str = "+.4f") -> str:
    if not row:
        return "-"
    return interval(row.get("estimate"), row.get("ci_low"), row.get("ci_high"), form)


def _p(value: float | None) -> str:
    return number(value, ".3g")


def analysis_section(memo: Memo, analysis: Mapping[str, Any] | None) -> None:
    """Every block of the analysis (nothing for a canary, or before both arms have data)."""
    if not analysis:
        memo.blocks.append(
            Paragraph("No analysis yet: it needs events of control and of another variant.")
        )
        return
    _registration(memo, analysis)
    _effects(memo, analysis)
    _checks(memo, analysis)
    _subgroups(memo, analysis)
    _cost(memo, analysis)
    recommendation = analysis["recommendation"]
    memo.blocks += [
        Heading("Recommendation", 3),
        Paragraph(
            f"Recommendation: {recommendation['decision']}"
            + (f" ({recommendation['variant']})" if recommendation.get("variant") else "")
            + ". "
            + " ".join(f"{reason[0].upper()}{reason[1:]}." for reason in recommendation["reasons"])
        ),
    ]


def _registration(memo: Memo, analysis: Mapping[str, Any]) -> None:
    memo.blocks.append(Heading("Pre-registration", 3))
    plan = analysis.get("plan")
    seen = f" Events from {_time(analysis.get('first_ts'))} to {_time(analysis.get('last_ts'))}."
    if not plan:
        memo.blocks.append(
            Paragraph(
                "Not pre-registered: the policy declares no primary_metric and mde for this "
                "experiment, so no MDE or power to hold the result to." + seen
            )
        )
        return
    variants = analysis["variants"]
    achieved = "; ".join(
        f"{name}: fixed-horizon {number(row['power']['fixed_horizon'], '.3f')}, "
        f"anytime-valid {number(row['power']['anytime'], '.3f')}"
        for name, row in variants.items()
    )
    units = (
        "; ".join(f"{name} {count(row['primary_n'])}" for name, row in variants.items())
        + f"; control {count(analysis['control']['primary_n'])}"
    )
    observed = "; ".join(f"{name} {_cell(row['difference'])}" for name, row in variants.items())
    memo.blocks += [
        Paragraph(
            f"Primary metric: {plan['primary_metric']} ({plan['outcome_type']}, higher is "
            f"better), baseline {plan['baseline']:g}. Locked {_time(analysis['registered_at'])} "
            f"with the experiment's first event."
            + seen
            + (f" Hypothesis: {analysis['hypothesis']}." if analysis.get("hypothesis") else "")
            + _planned(analysis.get("planned") or {})
        ),
        Table(
            ["", "pre-registered", "achieved"],
            [
                ["MDE", f"{plan['mde']:g}", f"difference {observed}"],
                [
                    "alpha",
                    f"{plan['alpha']:g}",
                    f"{analysis['alpha_per_comparison']:.4g} per comparison",
                ],
                ["power", f"{plan['power']:g}", achieved],
                [
                    "units per arm",
                    f"{count(plan['n_per_arm'])} (CUPED {count(plan['n_per_arm_cuped'])}, "
                    f"anytime-valid {count(plan['n_per_arm_anytime'])})",
                    units,
                ],
                ["CUPED R^2", f"{plan['cuped_r2']:g}", _r2(variants)],
            ],
        ),
    ]
    deviations = analysis.get("deviations") or []
    if deviations:
        memo.blocks.append(
            Table(["deviation recorded", "what"], [[d["ts"], d["note"]] for d in deviations])
        )
    else:
        memo.blocks.append(Paragraph("No deviation from the pre-registration."))


def _planned(planned: Mapping[str, Any]) -> str:
    if not (planned.get("start") or planned.get("end")):
        return ""
    return f" Planned dates: {planned.get('start') or '-'} to {planned.get('end') or '-'}."


def _r2(variants: Mapping[str, Any]) -> str:
    return "; ".join(
        f"{name} {number((row.get('cuped') or {}).get('r2'), '.3f')}"
        for name, row in variants.items()
    )


def _effects(memo: Memo, analysis: Mapping[str, Any]) -> None:
    control = analysis["control"]
    rows = []
    for name, row in analysis["variants"].items():
        cuped = row.get("cuped") or {}
        rows += [
            [
                name,
                "mean vs control",
                number(row["primary_mean"], ".4f"),
                f"control {number(control['primary_mean'], '.4f')}",
            ],
            [
                name,
                "difference" + (" (CUPED)" if cuped.get("applied") else ""),
                _cell(row["difference"]),
                f"p {_p(row['difference']['p_value'])}",
            ],
            [
                name,
                "difference, unadjusted",
                _cell(row["unadjusted"]),
                f"p {_p(row['unadjusted']['p_value'])}",
            ],
            [name, "ratio to control", _cell(row["ratio"], ".4f"), row["ratio"]["method"]],
            [name, "Hedges' g", number(row["hedges_g"], "+.3f"), "standardized difference"],
        ]
    memo.blocks += [
        Heading("Effect sizes", 3),
        Paragraph(
            "Intervals are anytime-valid confidence sequences (valid however often the "
            "experiment was looked at), at the alpha per comparison."
        ),
        Table(["variant", "effect", "estimate [interval]", "note"], rows),
        Heading("CUPED", 3),
        Table(
            ["variant", "theta", "R^2", "variance reduction", "pairs", "applied"],
            [
                [
                    name,
                    number(cuped.get("theta"), ".4f"),
                    number(cuped.get("r2"), ".4f"),
                    number(cuped.get("variance_reduction"), ".1%"),
                    count(cuped.get("n")),
                    "yes" if cuped.get("applied") else "no",
                ]
                for name, row in analysis["variants"].items()
                for cuped in [row.get("cuped") or {}]
            ],
        ),
    ]
    margined = {
        n: r["non_inferiority"] for n, r in analysis["variants"].items() if r.get("non_inferiority")
    }
    if margined:
        memo.blocks += [
            Heading("Non-inferiority", 3),
            Table(
                ["variant", "margin", "lower bound of the difference", "verdict"],
                [
                    [name, f"{ni['margin']:g}", number(ni["ci_low"]), ni["verdict"]]
                    for name, ni in margined.items()
                ],
            ),
        ]


def _checks(memo: Memo, analysis: Mapping[str, Any]) -> None:
    srm = analysis["srm"]
    rows = [
        [
            "split (SRM)",
            "all",
            f"p {_p(srm.get('p_value'))}",
            str(srm.get("verdict") or "not evaluated"),
        ]
    ]
    for name, row in analysis["variants"].items():
        balance, missing = row["balance"], row["missingness"]
        rows += [
            [
                "pre-period balance",
                name,
                f"standardized difference {number(balance['pre_period_smd'], '+.3f')}",
                {True: "balanced", False: "imbalanced", None: "no pre-period"}[balance["balanced"]],
            ],
            [
                "primary outcome missing",
                name,
                f"{number(missing['primary_missing'], '.2%')} vs control "
                f"{number(missing['control_primary_missing'], '.2%')}",
                "differs" if missing["differential"] else "no difference",
            ],
            [
                "pre-period missing",
                name,
                number(missing["pre_period_missing"], ".2%"),
                "CUPED applied" if (row.get("cuped") or {}).get("applied") else "unadjusted",
            ],
        ]
    memo.blocks += [
        Heading("Checks: balance and missingness", 3),
        Table(["check", "variant", "reading", "outcome"], rows),
        Heading("Guardrail outcomes", 3),
        Paragraph(
            f"Guardrail gate: {analysis.get('guardrails') or 'not evaluated'} "
            "(each guardrail's reading is in the table above)."
        ),
    ]


def _subgroups(memo: Memo, analysis: Mapping[str, Any]) -> None:
    rows = [
        [
            name,
            cell["segment"],
            f"{count(cell['n'])} / {count(cell['control_n'])}",
            _cell(cell),
            _p(cell["p_value"]),
            _p(cell.get("q_value")),
            "yes" if cell.get("discovery") else "no",
        ]
        for name, row in analysis["variants"].items()
        for cell in row["subgroups"]
    ]
    memo.blocks.append(Heading("Subgroups (by covariates.segment, Benjamini-Hochberg)", 3))
    if not rows:
        memo.blocks.append(Paragraph("No segment has events in both arms."))
        return
    memo.blocks.append(
        Table(["variant", "segment", "n / control n", "difference", "p", "q", "discovery"], rows)
    )


def _cost(memo: Memo, analysis: Mapping[str, Any]) -> None:
    rows = [
        [
            name,
            number(cost["unit_cost_mean"], ".5g"),
            number(cost["control_unit_cost_mean"], ".5g"),
            _cell(cost["difference"], "+.5g"),
            _cell(cost["relative"], "+.2%"),
        ]
        for name, row in analysis["variants"].items()
        if (cost := row.get("cost"))
    ]
    memo.blocks.append(Heading("Cost deltas", 3))
    if not rows:
        memo.blocks.append(Paragraph("No unit_cost in both arms."))
        return
    memo.blocks.append(Table(["variant", "unit cost", "control", "difference", "relative"], rows))


def sign_off(analysis: Mapping[str, Any] | None) -> list[Paragraph]:
    """What the sign-off block says above its lines: the recommendation to sign."""
    if not analysis:
        return []
    recommendation = analysis["recommendation"]
    plan = analysis.get("plan") or {}
    return [
        Paragraph(
            f"Recommended: {recommendation['decision']}"
            + (f" ({recommendation['variant']})" if recommendation.get("variant") else "")
            + f". Owner: {analysis.get('owner') or '-'}. Pre-registered: "
            + ("yes" if plan else "no")
            + f"; deviations: {len(analysis.get('deviations') or [])}."
        )
    ]


def _time(ts: float | None) -> str:
    return "-" if ts is None else rfc3339(ts, timespec="seconds")
