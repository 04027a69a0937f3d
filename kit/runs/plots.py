"""Reward curves of a run, drawn from its metrics.jsonl: the app's Curves tab and `kit plot` share these figures.

    kit plot runs/demo-20261122-101500          -> runs/demo-20261122-101500/curves.png

Panels appear only when the run logged their keys (KL only with grpo.beta > 0, held-out accuracy only with
eval.every_steps > 0). 0.0 is a value and is drawn (a GRPO reward is often exactly 0 early on). The x axis is
`run_step`, counted across stages, with a dashed line where each stage starts.

matplotlib's object API (Figure, not pyplot): the app draws from several server threads at once, and pyplot's
global state is not thread-safe. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kit import runs
from kit.errors import KitError
from kit.runs import metrics

# The one line the app and `kit show` print under the curves.
LOSS_NOTE = ("GRPO's loss is not a progress signal: it is about 0 by construction (advantages are centred within "
             "each group). Watch the rewards.")


@dataclass(frozen=True)
class Panel:
    title: str
    keys: tuple[str, ...]  # exact keys; "rewards/*" stands for every rewards/<name>/mean, "x*" for keys "x..."
    note: str              # what the panel tells a user (shown as the panel's subtitle)
    stage_kind: str = "grpo"
    unit_range: bool = False  # values live in [0, 1]: a fixed axis keeps 0 visibly 0 instead of mid-panel


PANELS = (
    Panel("Total reward", ("reward",), "weighted sum of the rewards, mean over completions"),
    Panel("Reward components", ("rewards/*",), "each reward's mean (unweighted, 0-1)", unit_range=True),
    Panel("Completion length", ("completions/mean_length",), "mean tokens per completion"),
    Panel("Clipped ratio", ("completions/clipped_ratio",), "share cut at grpo.max_completion_length",
          unit_range=True),
    Panel("KL to reference", ("kl",), "drift from the base model (logged when grpo.beta > 0)"),
    Panel("Zero-std fraction", ("frac_reward_zero_std",), "groups with identical rewards: no learning signal",
          unit_range=True),
    Panel("Held-out accuracy", ("eval/accuracy_strict", "eval/accuracy_lenient", "eval/pass@*"),
          "greedy answers, eval split (pass@k: eval.samples sampled, strict)", unit_range=True),
    Panel("Warm-up loss", ("loss",), "supervised (SFT) loss: this one should fall", stage_kind="sft"),
)


def _stage_kind(record: dict) -> str:
    # Stage names are "<index>-<kind>" (kit/train/train.py); rejection_sft fine-tunes like sft.
    kind = str(record.get("stage", "")).split("-", 1)[-1]
    return "sft" if kind in ("sft", "rejection_sft") else kind


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with the start-up bias removed (TensorBoard's smoothing): `weight` 0 returns
    the values unchanged, 0.9 averages over roughly the last 10.

    >>> ema([0.0, 1.0, 1.0], 0.0)
    [0.0, 1.0, 1.0]
    >>> [round(v, 3) for v in ema([0.0, 1.0], 0.5)]
    [0.0, 0.667]
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def panel_series(records: list[dict], panel: Panel) -> dict[str, list[tuple[float, float]]]:
    """{label: [(run_step, value), ...]} of one panel; labels drop the `rewards/` and `/mean` decoration."""
    chosen = [r for r in records if _stage_kind(r) == panel.stage_kind]
    keys = list(panel.keys)
    if keys == ["rewards/*"]:
        keys = [k for k in metrics.reward_keys(chosen) if k != "reward"]
    else:
        logged = list(dict.fromkeys(k for r in chosen for k in r))
        keys = [x for k in keys for x in ([k] if not k.endswith("*") else
                                          sorted((m for m in logged if m.startswith(k[:-1])), key=_k_order))]
    out = {}
    for key in keys:
        points = metrics.series(chosen, key)
        if points:
            out[key.removeprefix("rewards/").removesuffix("/mean")] = points
    return out


def _k_order(key: str):
    """eval/pass@1 before eval/pass@8 before eval/pass@16."""
    tail = key.rsplit("@", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 30, key)


def stage_starts(records: list[dict]) -> list[tuple[float, str]]:
    """(x, stage name) where each logged stage begins: its records' run_step - step offset."""
    starts: dict[str, float] = {}
    for r in records:
        stage, step, run_step = r.get("stage"), r.get("step"), r.get("run_step")
        if isinstance(stage, str) and isinstance(step, int) and isinstance(run_step, int):
            starts.setdefault(stage, run_step - step)
    return sorted((x, name) for name, x in starts.items())


def figure(records: list[dict], smoothing: float = 0.0, title: str | None = None):
    """A matplotlib Figure with one panel per metric group the run logged, or None when nothing is logged yet.
    With `smoothing` > 0 the raw values stay visible, faint, under the smoothed line."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [(p, s) for p in PANELS if (s := panel_series(records, p))]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.0 * rows + (0.4 if title else 0)), dpi=100, layout="constrained")
    if title:
        fig.suptitle(title, fontsize=11)
    boundaries = stage_starts(records)
    for i, (panel, data) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for n, (label, points) in enumerate(data.items()):
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            color, style = f"C{n}", ("-", "--", "-.", ":")[n % 4]  # styles: lines that coincide stay visible
            # A marker on every point while there are few, so the first logged step is visible at once.
            marker = "o" if len(xs) <= 30 else None
            if smoothing > 0 and len(ys) > 1:
                ax.plot(xs, ys, color=color, alpha=0.25, linewidth=1)
                ax.plot(xs, ema(ys, smoothing), color=color, linestyle=style, label=label, linewidth=1.8)
            else:
                ax.plot(xs, ys, color=color, linestyle=style, label=label, linewidth=1.5, marker=marker,
                        markersize=3)
        xs_all = [x for points in data.values() for x, _ in points]
        lo, hi = min(xs_all), max(xs_all)
        for x, name in boundaries:
            if lo < x + 1 <= hi:  # only stages that begin inside this panel's range
                ax.axvline(x + 0.5, color="0.55", linestyle="--", linewidth=0.9)
                ax.annotate(name, (x + 0.5, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="0.4",
                            xytext=(2, -10), textcoords="offset points")
        if panel.unit_range:
            ax.set_ylim(-0.04, 1.04)
        ax.set_title(f"{panel.title}\n{panel.note}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(alpha=0.3)
        ax.set_xlabel("step (all stages)", fontsize=8)
        if len(data) > 1:
            ax.legend(fontsize=7.5, loc="best", framealpha=0.7, ncols=2 if len(data) > 3 else 1)
    return fig


def plot_run(run: str | Path, out: str | Path | None = None, smoothing: float = 0.0) -> Path:
    """Write the run's curves to a PNG (default RUN/curves.png) and return its path."""
    run = runs.open_run(run)
    fig = figure(metrics.read_jsonl(run / runs.METRICS), smoothing, title=run.name)
    if fig is None:
        raise KitError(f"{run} has no metrics yet (metrics.jsonl is empty); wait for the first logged step")
    out = Path(out) if out else run / "curves.png"
    fig.savefig(out)
    return out
