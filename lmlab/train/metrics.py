"""Run metrics: one JSON object per line in ``metrics.jsonl``, and a loss / learning-rate plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import MissingDependencyError
from ..core.io import atomic_path, write_text
from ..core.plotting import pyplot


class MetricsLog:
    """Append-only JSONL of training records; resuming at step s drops records after s."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        kept: list[str] = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # the half-written last line of a killed run
                    continue
                if record.get("step", 0) <= resume_step:
                    kept.append(line)
        write_text(self.path, "".join(line + "\n" for line in kept))
        self.records = [json.loads(line) for line in kept]

    def write(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def throughput(path: Path) -> float:
    """Tokens per second over the optimizer steps alone (from a run's ``metrics.jsonl``)."""
    tokens = seconds = 0.0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "ms_per_step" in rec:
            tokens += rec["tokens_per_s"] * rec["ms_per_step"] / 1000
            seconds += rec["ms_per_step"] / 1000
    return tokens / seconds if seconds else 0.0


def plot_metrics(records: list[dict], path: Path, extra: Sequence[str] = ()) -> bool:
    """Draw training loss (and eval loss), the learning rate and one panel per ``extra`` key (an
    objective's own measures: reward, KL, ...) against the step; False without matplotlib."""
    try:
        plt = pyplot("the training plot")
    except MissingDependencyError:
        return False
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    fig, axes = plt.subplots(2 + len(extra), 1, figsize=(7, 6 + 2 * len(extra)), sharex=True)
    ax_loss, ax_lr = axes[0], axes[1]
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=0.8)
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval")
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.legend()
    ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:green")
    ax_lr.set_ylabel("learning rate")
    for ax, key in zip(axes[2:], extra, strict=True):
        points = [r for r in records if isinstance(r.get(key), (int, float))]
        ax.plot([r["step"] for r in points], [r[key] for r in points], ".-", lw=0.8, color="tab:purple")
        ax.set_ylabel(key.replace("_", " "))
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True
