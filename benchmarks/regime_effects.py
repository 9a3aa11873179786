"""Each fix's held-out effect within each level of a grid factor (e.g. the pretrained-regime study):
Δ vs that level's own baseline config, with the report's two-part intervals and one Holm family per
level (fer_core/report/evidence.py). The report's table measures every grid cell against one baseline
(the first cell); a regime study asks how a fix's effect *changes* between regimes, so here each regime
gets its own baseline (``--baseline-key``'s first value of the other factor, e.g. loss=ce).

    python benchmarks/regime_effects.py pretrained-regime --storage sqlite:///fer-study.db \
        --factor pretrained --baseline-key loss=ce
"""

from __future__ import annotations

import argparse

import pandas as pd

from fer_core.report import evidence
from fer_core.report.export import load
from fer_core.report.table import held_out_inputs, variant_order


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--storage", required=True)
    ap.add_argument("--factor", required=True, help="the grid factor whose levels get their own baseline")
    ap.add_argument("--baseline-key", required=True, help="KEY=VALUE of the other factor naming each level's baseline")
    args = ap.parse_args()
    _, data, _ = load(args.study, args.storage)
    order = variant_order(data, data.units)
    per_seed = {v: data.units[data.units["variant"] == v].set_index("unit") for v in order}
    labels, variants = held_out_inputs(data, order, per_seed)
    levels = dict.fromkeys(v.split(",")[0] for v in order)  # "pretrained=False", "pretrained=file", ...
    rows = []
    for level in levels:
        members = [x for x in variants if x.name.split(",")[0] == level]
        base = next(x.name for x in members if args.baseline_key in x.name)
        members.sort(key=lambda x: x.name != base)
        cols = evidence.held_out_columns(members, labels, base, data.metric, data.class_names, data.groups,
                                         data.tail, data.settings)
        for x in members:
            c = cols[x.name]
            rows.append({"level": level, "variant": x.name.split(",", 1)[1], "n": len(x.units),
                         f"test {data.metric} [95% CI]": f"{c['test_score']:.3f} [{c['test_score_ci_lo']:.3f}, "
                                                         f"{c['test_score_ci_hi']:.3f}]",
                         "Δ vs level's baseline [95% CI]": "" if x.name == base else
                         f"{c['delta']:+.3f} [{c['delta_ci_lo']:+.3f}, {c['delta_ci_hi']:+.3f}]",
                         "p (Holm, per level)": "" if x.name == base else f"{c['p_holm']:.3g}"})
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
