"""``python -m medseg_core.models.table``: the registry as a Markdown table (for the README)."""

from __future__ import annotations

from . import build_model, count_parameters, get_spec, list_models


def markdown() -> str:
    rows = [
        "| model | report | task | input contract | params (paper / demo) | default pre / post | dropout (MC) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in list_models():
        s = get_spec(n)
        p = count_parameters(build_model(n, "paper")) / 1e6
        d = count_parameters(build_model(n, "demo")) / 1e6
        rows.append(
            f"| `{n}` | {s.report} | {s.task} | {s.contract()} | {p:.2f} M / {d:.2f} M | "
            f"{s.preprocessing} / {', '.join(s.postprocessing) or 'none'} | {s.dropout} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
