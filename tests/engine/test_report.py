"""Contents of the JSON report and its conversion of tensors and arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.engine import RunReport, evaluation_metrics, to_jsonable


def test_report_holds_config_environment_metrics_and_timing(tmp_path) -> None:
    report = RunReport(tmp_path / "report.json", config={"lr": 3.5e-4, "root": Path("/data")})
    report.log_epoch("stage1", 1, {"loss": 2.5, "lr": 1e-4}, time_s=1.5)
    report.log_epoch("stage1", 2, {"loss": torch.tensor(2.0)}, time_s=2.0)
    report.log_evaluation("stage1", 2, {"mAP": 0.25, "R1": 0.5})
    report.set_result("baseline", {"mAP": 0.25, "cmc": np.array([0.5, 0.75])})
    data = json.loads(report.save().read_text())
    assert data["config"] == {"lr": 3.5e-4, "root": "/data"}
    assert data["environment"]["torch"] == torch.__version__
    assert data["environment"]["world_size"] == 1
    stage = data["stages"]["stage1"]
    assert stage["epochs"] == [
        {"epoch": 1, "time_s": 1.5, "loss": 2.5, "lr": 1e-4},
        {"epoch": 2, "time_s": 2.0, "loss": 2.0},
    ]
    assert stage["time_s"] == 3.5
    assert stage["evaluations"] == [{"epoch": 2, "mAP": 0.25, "R1": 0.5}]
    assert data["results"] == {"baseline": {"mAP": 0.25, "cmc": [0.5, 0.75]}}
    assert data["timing"]["wall_time_s"] >= 0 and data["timing"]["started_at"]
    assert report.last_evaluation("stage1") == {"mAP": 0.25, "R1": 0.5}
    assert report.last_evaluation("stage2") == {}


def test_state_dict_carries_history_and_time_into_a_new_report(tmp_path) -> None:
    first = RunReport(tmp_path / "a.json", config={"run": 1})
    first.log_epoch("s", 1, {"loss": 1.0}, time_s=0.5)
    state = first.state_dict()
    state["timing"]["wall_time_s"] = 100.0
    second = RunReport(tmp_path / "b.json", config={"run": 2})
    second.load_state_dict(state)
    second.note_resume("s", 1)
    data = json.loads(second.save().read_text())
    assert data["config"] == {"run": 2}
    assert data["stages"]["s"]["epochs"] == [{"epoch": 1, "time_s": 0.5, "loss": 1.0}]
    assert data["timing"]["wall_time_s"] >= 100.0
    assert data["resumes"][0]["stage"] == "s"


def test_to_jsonable() -> None:
    converted = to_jsonable(
        {1: (torch.tensor([1.5]), np.float32(2.0)), "nan": float("nan"), "dtype": torch.float16}
    )
    assert converted == {"1": [[1.5], 2.0], "nan": None, "dtype": "torch.float16"}
    json.dumps(converted)


def test_evaluation_metrics_from_a_mapping_or_a_rank_result() -> None:
    from reidkit.eval import evaluate_rank

    distances = np.array([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]])
    ids = [np.array(values) for values in ([1, 2], [1, 2, 2], [0, 0], [1, 1, 1])]
    result = evaluate_rank(distances, *ids, max_rank=3)
    metrics = evaluation_metrics(result)
    assert metrics == {
        "mAP": result.mAP,
        "mINP": result.mINP,
        "R1": result.rank(1),
        "skipped_queries": 0,
    }
    assert isinstance(metrics["skipped_queries"], int)
    # the second query's only match shares its camera: junk, so the query is skipped
    skipped = evaluate_rank(distances, [1, 2], [1, 2, 0], [0, 0], [1, 0, 1], max_rank=3)
    assert evaluation_metrics(skipped)["skipped_queries"] == 1
    assert evaluation_metrics({"acc": torch.tensor(0.5)}) == {"acc": 0.5}
    with pytest.raises(ValueError, match="evaluate must return"):
        evaluation_metrics(0.5)
