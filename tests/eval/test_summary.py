"""The report's numbers from predictions (no model): per class, per video, curves and the
snapshot/streaming scoring, against a groupby written here; the promotion rule; compare's
table logic."""

from __future__ import annotations

import numpy as np
import pytest

from assynch.eval.compare import ComparedRun, comparison_table, differing_params, sort_runs
from assynch.eval.predict import Prediction
from assynch.eval.promotion import decide_promotion
from assynch.eval.summary import SummarySettings, summarise

CLASSES = 21


def random_predictions(seed: int = 0, videos: int = 5, windows: int = 3) -> list[Prediction]:
    rng = np.random.default_rng(seed)
    out = []
    for video in range(videos):
        for sample in range(int(rng.integers(1, 4))):
            target = int(rng.integers(0, CLASSES))
            probs = {mode: rng.dirichlet(np.full(CLASSES, 0.2), size=windows).astype(np.float32)
                     for mode in ("snapshot", "streaming")}
            out.append(Prediction(f"v{video}", f"v{video}_{sample}", target, probs))
    return out


def expected_emd(probs: np.ndarray, target: int) -> float:
    offsets = (np.arange(CLASSES) - 10) * 0.2
    return float(np.sum(probs * np.abs(offsets - offsets[target])))


def test_per_class_per_video_and_curves_match_a_groupby() -> None:
    predictions = random_predictions()
    report = summarise(predictions, ("snapshot", "streaming"), SummarySettings(resamples=100))

    streaming = report["streaming"]
    rows = [(p.video_uid, p.offset_class, expected_emd(p.probs["streaming"][-1], p.offset_class))
            for p in predictions]
    assert streaming["overall"]["emd_sec"]["value"] == pytest.approx(
        np.mean([r[2] for r in rows]), abs=1e-5)
    for entry in streaming["per_class"]:
        mine = [r[2] for r in rows if r[1] == entry["class"]]
        assert entry["predictions"] == len(mine)
        assert entry["emd_sec"]["value"] == pytest.approx(np.mean(mine), abs=1e-5)
        assert entry["offset_sec"] == pytest.approx((entry["class"] - 10) * 0.2)
    assert sum(e["predictions"] for e in streaming["per_class"]) == len(predictions)
    for entry in streaming["per_video"]:
        mine = [r[2] for r in rows if r[0] == entry["video_uid"]]
        assert entry["emd_sec"]["value"] == pytest.approx(np.mean(mine), abs=1e-5)
    assert [p["windows_seen"] for p in streaming["curve"]] == [1, 2, 3]
    for point in streaming["curve"]:
        k = point["windows_seen"] - 1
        mine = [expected_emd(p.probs["streaming"][k], p.offset_class) for p in predictions]
        assert point["emd_sec"]["value"] == pytest.approx(np.mean(mine), abs=1e-5)

    snapshot = report["snapshot"]  # every window alone: 3 predictions per sample
    every = [expected_emd(w, p.offset_class) for p in predictions for w in p.probs["snapshot"]]
    assert snapshot["overall"]["predictions"] == 3 * len(predictions)
    assert snapshot["overall"]["emd_sec"]["value"] == pytest.approx(np.mean(every), abs=1e-5)
    assert np.array(snapshot["confusion"]).sum() == 3 * len(predictions)
    assert sum(snapshot["error_histogram"]["counts"]) == 3 * len(predictions)


@pytest.mark.parametrize(("champion", "margin", "candidate", "promote", "reason"), [
    (None, 1.0, (0.10, 1.0), True, "no champion"),
    ((0.50, 0.50), 1.0, (0.52, 0.49), True, "+2.00 points"),
    ((0.50, 0.50), 1.0, (0.505, 0.40), False, "below the margin"),
    ((0.50, 0.50), 1.0, (0.60, 0.51), False, "EMD 0.5100 s is worse"),
    ((0.50, 0.50), 0.0, (0.50, 0.50), True, "+0.00 points"),
    ((0.50, 0.50), 1.0, (0.51, 0.50), True, "+1.00 points"),
])
def test_promotion_rule(
    champion: tuple[float, float] | None, margin: float, candidate: tuple[float, float],
    promote: bool, reason: str,
) -> None:
    decision = decide_promotion(
        candidate_version="3", candidate={"acc1": candidate[0], "emd_sec": candidate[1]},
        champion_version="2" if champion else None,
        champion={"acc1": champion[0], "emd_sec": champion[1]} if champion else None,
        margin_points=margin,
    )
    assert decision.promote is promote
    assert reason in decision.reason


def test_the_champion_is_not_promoted_over_itself() -> None:
    numbers = {"acc1": 0.9, "emd_sec": 0.1}
    for champion in (numbers, None):  # the job does not look up numbers of the candidate itself
        decision = decide_promotion(candidate_version="2", candidate=numbers,
                                    champion_version="2", champion=champion, margin_points=0.0)
        assert not decision.promote and "already the champion" in decision.reason


def test_compare_shows_only_differing_params_and_sorts_missing_metrics_last() -> None:
    runs = [
        ComparedRun("a" * 32, "a", "1", {"lr": "1", "seed": "0"}, {"streaming/emd_sec": 0.5}),
        ComparedRun("b" * 32, "b", "1", {"lr": "2", "seed": "0", "extra": "x"},
                    {"streaming/emd_sec": 0.3, "streaming/acc1_ci_low": 0.1}),
        ComparedRun("c" * 32, "c", "1", {"lr": "2", "seed": "0"}, {}),
    ]
    assert differing_params(runs) == ["extra", "lr"]  # missing 'extra' differs from 'x'
    assert [r.name for r in sort_runs(runs, "streaming/emd_sec")] == ["b", "a", "c"]
    assert [r.name for r in sort_runs(runs, "streaming/emd_sec", ascending=False)] == [
        "a", "b", "c"]
    header, rows = comparison_table(runs, "streaming/emd_sec")
    assert header == ["rank", "run", "run id", "extra", "lr", "streaming/emd_sec"]
    assert rows[0][1:] == ["b", "b" * 12, "x", "2", "0.3000"]
    assert rows[2][-1] == "-"
    runs[1].metrics.update({"streaming/emd_sec_ci_low": 0.25, "streaming/emd_sec_ci_high": 0.4})
    header, rows = comparison_table(runs, "streaming/emd_sec")
    assert header[5:] == ["streaming/emd_sec", "streaming/emd_sec interval"]
    assert rows[0][5:] == ["0.3000", "[0.2500, 0.4000]"] and rows[1][6] == "-"


def test_quickstart_prints_the_metrics_table_and_the_ui_command() -> None:
    from rich.console import Console

    from assynch.quickstart import evaluation_table, mlflow_ui_command

    report = {
        "model": {"uri": "models:/as-synchformer@candidate"},
        "data": {"split": "test", "samples": 4, "videos": 2},
        "modes": summarise(random_predictions(videos=2), ("streaming",),
                           SummarySettings(resamples=50)),
    }
    console = Console(record=True, width=200)
    console.print(evaluation_table(report))
    text = console.export_text()
    value = report["modes"]["streaming"]["overall"]["emd_sec"]["value"]
    assert "streaming" in text and f"{value:.3f}" in text and "ACC@1±1" in text
    assert mlflow_ui_command("sqlite:///data/quickstart/mlflow.db") == (
        "mlflow ui --backend-store-uri sqlite:///data/quickstart/mlflow.db --port 5000")
