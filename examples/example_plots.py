"""The PNG charts the examples save: grouped bars and line curves (matplotlib, Agg).

Shared by the example scripts, which import it from their own folder. Without
matplotlib the charts are skipped with a message; the tables still print.
"""

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib to get one)")
        return None
    return plt


def _save(plt, fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def bar_chart(path, categories, series, ylabel):
    """Saves grouped bars: one group per category, one bar per series.

    Args:
        path: where the PNG goes (folders are created).
        categories: list of str, the groups along x.
        series: dict, label -> list of values, one per category.
        ylabel: str.
    """
    plt = _pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(categories))], values, width, label=label)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(categories))], list(categories))
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend()
    _save(plt, fig, path)


def line_chart(path, curves, xlabel, ylabel, vertical=None):
    """Saves one line per curve, each point marked.

    Args:
        path: where the PNG goes (folders are created).
        curves: dict, label -> (xs, ys).
        xlabel, ylabel: str.
        vertical: optional (x, label) drawn as a dotted vertical line.
    """
    plt = _pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(list(xs), list(ys), "o-", label=label)
    if vertical is not None:
        ax.axvline(vertical[0], color="gray", linestyle=":", label=vertical[1])
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    _save(plt, fig, path)
