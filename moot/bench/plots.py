"""The report's plots (matplotlib, when installed): accuracy against tokens and cost, and by
round."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from moot.bench.metrics import MethodSummary


def plots(group: list[MethodSummary], out: Path, suffix: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["Plots: install matplotlib (`pip install 'moot[bench]'`) to get them.", ""]
    tokens_png = f"accuracy_vs_tokens{suffix}.png"
    accuracy_against(group, lambda s: s.tokens, "tokens per question", out / tokens_png)
    shown = [f"![accuracy against tokens]({tokens_png})", ""]
    if all(s.cost for s in group):  # a log scale needs every cost above 0
        cost_png = f"accuracy_vs_cost{suffix}.png"
        accuracy_against(group, lambda s: s.cost or 0.0, "cost per question", out / cost_png)
        shown += [f"![accuracy against cost]({cost_png})", ""]

    figure, (accuracy, agreement) = plt.subplots(1, 2, figsize=(10, 4))
    for s in group:
        rounds = [r.round for r in s.by_round]
        accuracy.plot(rounds, [100 * r.accuracy for r in s.by_round], marker="o", label=s.method)
        if s.agents > 1:
            agreement.plot(
                rounds, [100 * r.agreement for r in s.by_round], marker="o", label=s.method
            )
    for axes, label in ((accuracy, "accuracy of the round's vote, %"), (agreement, "agreement, %")):
        axes.set_xlabel("round")
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.xaxis.get_major_locator().set_params(integer=True)
        if axes.get_lines():  # (single agents have no agreement line)
            axes.legend(fontsize="small")
    accuracy.set_title(f"{group[0].task}: by round")
    figure.tight_layout()
    rounds_png = f"accuracy_by_round{suffix}.png"
    figure.savefig(out / rounds_png, dpi=120)
    plt.close(figure)
    return [*shown, f"![by round]({rounds_png})", ""]


def accuracy_against(
    group: list[MethodSummary], spent: Callable[[MethodSummary], float], what: str, path: Path
) -> None:
    """Accuracy (with its interval) against what each method spent per question, on a log
    scale where every method spent something."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for s in group:
        errors = [
            [100 * (s.accuracy.value - s.accuracy.low)],
            [100 * (s.accuracy.high - s.accuracy.value)],
        ]
        axes.errorbar(
            [spent(s)], [100 * s.accuracy.value], yerr=errors, fmt="o", capsize=4, label=s.method
        )
    logarithmic = all(spent(s) > 0 for s in group)  # (a model that reports no usage: 0)
    if logarithmic:
        axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel(f"{what} (log scale)" if logarithmic else what)
    axes.set_ylabel("accuracy, % (95% CI)")
    axes.set_title(f"{group[0].task}: accuracy against {what.split()[0]}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
