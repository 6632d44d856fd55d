"""`kubeflower run`'s summary: every metric in the table under its name, the job's loss and
accuracy in the plot (curves, not just axes), messages printed as they are."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from kubeflower import local
from kubeflower.core.api import MetricNames
from kubeflower.core.server_status import Phase, RoundRecord, ServerStatus


def colored_pixels(png: Path) -> int:
    """Pixels of saturated colour: the curves (axes, grid and text are black, grey or white)."""
    from matplotlib import image

    pixels = image.imread(png)[..., :3]
    return int(((pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.3).sum())


def _status(phase: Phase = Phase.SUCCEEDED, message: str = "", **metrics: dict[str, float]) -> ServerStatus:
    status = ServerStatus(phase=phase, total_rounds=2, message=message)
    for r in (1, 2):
        status = status.with_round(
            RoundRecord(
                round=r,
                metrics={k: v * r for k, v in metrics.get("evaluate", {}).items()},
                train_metrics={k: v / r for k, v in metrics.get("train", {}).items()},
                server_metrics={k: v * r for k, v in metrics.get("server", {}).items()},
                replies=2,
            )
        )
    return status


def _report(status: ServerStatus, output: Path, names: MetricNames | None = None) -> str:
    out = io.StringIO()
    local._report(status, output, Console(file=out, soft_wrap=True), names or MetricNames())
    return out.getvalue()


def test_every_metric_under_its_name_and_a_plot_with_curves(tmp_path: Path) -> None:
    status = _status(
        train={"train_loss": 1.0},
        evaluate={"eval_loss": 0.4, "eval_acc": 0.4, "f1": 0.3},
        server={"accuracy": 0.45, "loss": 0.3},
    )
    text = _report(status, tmp_path)
    for heading in ("train_loss", "eval_loss", "eval_acc", "f1", "server accuracy", "server loss"):
        assert f" {heading} " in text, text
    with_curves = colored_pixels(tmp_path / "metrics.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    _report(_status(), empty)  # rounds without metrics: axes only
    assert colored_pixels(empty / "metrics.png") < 50 < 2000 < with_curves


def test_the_progress_line_shows_the_jobs_own_loss_and_accuracy() -> None:
    status = _status(evaluate={"eval_loss": 0.4, "eval_acc": 0.4}, server={"accuracy": 0.45, "loss": 0.3})
    assert local._metrics_text(status, MetricNames()) == "eval_loss 0.8000  eval_acc 0.8000"
    chosen = MetricNames(accuracy="accuracy", loss="loss")  # not in the clients' metrics: the server's
    assert local._metrics_text(status, chosen) == "loss 0.6000  accuracy 0.9000"


def test_a_message_with_brackets_is_printed_intact(tmp_path: Path) -> None:
    message = "model [resnet] wants input [3, 32, 32]; got [1, 8, 8] [red]not markup[/red]"
    text = _report(_status(Phase.FAILED, message), tmp_path)
    assert f"job failed: {message}" in text
