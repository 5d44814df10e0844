"""The backtest's PNG (:func:`plot_backtest`): equity of every strategy, the agent's position
and action strip, drawdown and exposure, each strategy in its own colour (split out of
:mod:`ppo_approach.backtest`, which runs the strategies and writes the report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common import atomic_path
from pipeline.run.report_names import STRATEGY_NAMES
from ppo_approach.backtest import _fmt, _pct
from ppo_approach.evaluation import EpisodeRecord, drawdown_series
from ppo_approach.trading_env import Actions

STRATEGY_COLOURS: dict[str, str] = {
    "agent": "black",
    "buy_and_hold": "tab:blue",
    "flat": "tab:gray",
    "random": "tab:orange",
    "classifier_rule": "tab:green",
    "agent_cost_0x": "tab:purple",
    "agent_cost_2x": "tab:red",
}
"""One colour per strategy in every panel of the backtest PNG (the colour cycle gave
``classifier_rule`` and ``flat`` the same colour in different panels)."""


def _line_style(name: str) -> dict[str, Any]:
    """Matplotlib line keywords of strategy ``name``: fixed colour; the agent thick and on top."""
    colour = STRATEGY_COLOURS.get(name, "tab:brown")
    if name == "agent":
        return {"color": colour, "linewidth": 2.4, "zorder": 10}
    style: dict[str, Any] = {"color": colour, "linewidth": 1.1, "alpha": 0.85, "zorder": 2}
    if name == "flat":
        style["linestyle"] = ":"
    elif name.startswith("agent_cost"):
        style["linestyle"] = "--"
    return style


STRIP_LABEL = "agent_actions"
"""``Axes.get_label()`` of the PNG's position/action strip, so tests can find it."""

_ACTION_MARKERS: tuple[tuple[str, tuple[Actions, ...], dict[str, Any]], ...] = (
    ("buy", (Actions.BUY_25, Actions.BUY_50, Actions.BUY_100), {"marker": "^", "color": "green"}),
    ("sell", (Actions.SELL_25, Actions.SELL_50, Actions.SELL_100), {"marker": "v", "color": "red"}),
    ("close", (Actions.CLOSE,), {"marker": "x", "color": "black"}),
    ("reverse", (Actions.REVERSE,), {"marker": "D", "color": "purple"}),
)
"""Strip markers of the agent's valid trade actions: (legend label, actions, marker style)."""


def _draw_action_strip(ax: Any, rec: EpisodeRecord, ts: np.ndarray) -> None:
    """The agent's position (long / short shading, flat blank) and its actions on ``ax``.

    Position ``units[i]`` is held from ``ts[bars[i]]`` to ``ts[bars[i + 1]]``; an action decided
    at step ``i`` is marked where it fills, at ``ts[bars[i + 1]]``, so a marker sits where the
    shading changes. Valid trade actions sit on the middle line, invalid decisions (no-ops) as
    grey ticks at the bottom.
    """
    import matplotlib.dates as mdates

    x = np.asarray(mdates.date2num(ts[rec.bars]), dtype=np.float64)  # (n+1,) days
    step = float(np.median(np.diff(x))) if x.size > 1 else 1.0
    ends = np.append(x[1:], x[-1] + step)  # (n+1,) end of each holding span
    side = np.sign(rec.units)  # (n+1,)
    for sign, colour, label in ((1.0, "tab:green", "long"), (-1.0, "tab:red", "short")):
        on = np.flatnonzero(side == sign)
        if on.size == 0:
            continue
        # Contiguous runs of the same side become one bar each (few artists for long blocks).
        breaks = np.flatnonzero(np.diff(on) > 1)
        starts = on[np.concatenate(([0], breaks + 1))]
        stops = on[np.concatenate((breaks, [on.size - 1]))]
        spans = [(x[a], ends[b] - x[a]) for a, b in zip(starts, stops, strict=True)]
        ax.broken_barh(spans, (0.0, 1.0), color=colour, alpha=0.25, label=label, linewidth=0)
    fill_x = x[1:]  # (n,) where each step's action fills
    acts = rec.actions
    for label, members, style in _ACTION_MARKERS:
        hit = rec.valid & np.isin(acts, [int(a) for a in members])
        if hit.any():
            ax.plot(
                fill_x[hit],
                np.full(int(hit.sum()), 0.5),
                linestyle="none",
                label=label,
                markersize=6,
                **style,
            )
    if (~rec.valid).any():
        bad = ~rec.valid
        ax.plot(
            fill_x[bad],
            np.full(int(bad.sum()), 0.08),
            linestyle="none",
            marker="|",
            color="tab:gray",
            markersize=5,
            label=f"invalid ({int(bad.sum())})",
        )
    ax.set_ylim(0.0, 1.45)  # headroom above the shading for the legend, which hides nothing
    ax.set_yticks([])
    ax.set_ylabel("agent")
    ax.set_label(STRIP_LABEL)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", fontsize=7, ncol=len(labels), framealpha=0.6)


def luck_label(s: dict[str, Any]) -> str:
    """Short form of one strategy's ``significance`` entry, for the PNG's legend."""
    lo, hi = s.get("total_return_ci95") or (None, None)
    dsr = s.get("dsr")
    score = f"DSR {_fmt(dsr, False)}" if dsr is not None else f"PSR {_fmt(s.get('psr'), False)}"
    return f"{s.get('verdict', '?')}: 95 % CI [{_pct(lo)}, {_pct(hi)}], {score}"


def backtest_figure(
    runs: dict[str, list[EpisodeRecord]],
    timestamps: np.ndarray,
    title: str,
    luck: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """The matplotlib figure of :func:`plot_backtest` (the caller closes it). ``luck``: the
    report's ``significance`` entry; its strategies' legend labels carry the verdict, the 95 %
    interval of the total return and the PSR (DSR for a deflated agent).

    Panels: equity of every strategy; a strip of the agent's position (long / short shading)
    and actions (:data:`STRIP_LABEL`; only with an ``agent`` run); then drawdown and
    exposure of the agent, buy-and-hold and the classifier rule. Each strategy has its colour of
    :data:`STRATEGY_COLOURS` in every panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = np.asarray(timestamps)
    if "agent" in runs:
        fig, all_axes = plt.subplots(
            4, 1, figsize=(11, 10), sharex=True, height_ratios=(3, 0.8, 1.3, 1.3)
        )
        axes = [all_axes[0], all_axes[2], all_axes[3]]
    else:
        fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True, height_ratios=(3, 1.3, 1.3))
    _draw_equity(axes[0], runs, ts, title, luck)
    _draw_risk(axes[1], axes[2], runs, ts)
    _sorted_legends(axes)
    axes[1].set_ylabel("drawdown %")
    axes[2].set_ylabel("exposure %")
    if "agent" in runs:
        # Drawn after the date-valued panels, so the shared x axis already has its date units.
        _draw_action_strip(all_axes[1], runs["agent"][0], ts)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _draw_equity(
    ax: Any,
    runs: dict[str, list[EpisodeRecord]],
    ts: np.ndarray,
    title: str,
    luck: dict[str, dict[str, Any]] | None,
) -> None:
    """The equity panel of :func:`backtest_figure`: every strategy (the random policy: mean of
    its seeds), legend labels with ``luck``'s short form."""
    # The agent last, so it is drawn on top of the baselines it coincides with (flat, or its own
    # cost variants while it does not trade).
    order = [n for n in runs if n != "agent"] + (["agent"] if "agent" in runs else [])
    for name in order:
        recs = runs[name]
        rec = recs[0]
        x = ts[rec.bars]
        eq = np.mean([r.equity for r in recs], axis=0) if len(recs) > 1 else rec.equity
        label = f"{name} (mean of {len(recs)} seeds)" if len(recs) > 1 else name
        if luck and name in luck:
            label += f" ({luck_label(luck[name])})"
        ax.plot(x, eq, label=label, **_line_style(name))
    ax.set_ylabel("equity")
    ax.set_title(title)


def _draw_risk(
    drawdown_ax: Any, exposure_ax: Any, runs: dict[str, list[EpisodeRecord]], ts: np.ndarray
) -> None:
    """The drawdown and exposure panels of :func:`backtest_figure`: the agent, buy-and-hold and
    the classifier rule."""
    for name in [n for n in ("buy_and_hold", "classifier_rule", "agent") if n in runs]:
        rec = runs[name][0]
        style = _line_style(name)
        drawdown_ax.plot(ts[rec.bars], -100 * drawdown_series(rec.equity), label=name, **style)
        exposure_ax.plot(
            ts[rec.bars], 100 * rec.position_fraction(), label=name, drawstyle="steps", **style
        )


def _sorted_legends(axes: list[Any]) -> None:
    """Legends of the equity, drawdown and exposure panels in the strategies' usual order (agent
    first) although the agent is drawn last."""
    for ax, loc in ((axes[0], "best"), (axes[1], "lower left"), (axes[2], "best")):
        handles, labels = ax.get_legend_handles_labels()
        rank = {n: i for i, n in enumerate(STRATEGY_NAMES)}
        pairs = sorted(
            zip(handles, labels, strict=True), key=lambda h: rank.get(h[1].split()[0], 99)
        )
        ax.legend([h for h, _ in pairs], [lb for _, lb in pairs], loc=loc, fontsize=8)


def plot_backtest(
    runs: dict[str, list[EpisodeRecord]],
    timestamps: np.ndarray,
    path: str | Path,
    title: str,
    luck: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Equity curves (agent and baselines), drawdowns and positions, saved atomically as PNG.

    ``timestamps`` (n_bars,) of the block; records index it through their ``bars``; ``luck``:
    the report's ``significance`` entry, shown in the legend.
    """
    import matplotlib.pyplot as plt

    fig = backtest_figure(runs, timestamps, title, luck)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target
