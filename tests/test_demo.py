"""`openscene-ray demo` end to end on a reduced world: every stage runs and the report holds."""

import json

import numpy as np
import pytest
from PIL import Image

from openscene_ray.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_the_report(ray_session, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--set", "num_scenes=4", "--set", "views_per_scene=6",
                 "--set", "points_per_scene=3000", "--set", "distill_epochs=2",
                 "--set", "queries=[toilet, refrigerator]"]) == 0  # fmt: skip

    summary = json.loads((out / "summary.json").read_text())
    modes = summary["evaluation"]["modes"]
    assert set(modes) == {"fusion", "distill", "ensemble"}
    assert modes["fusion"]["miou"] >= 0.9  # oracle 2D maps, exact depth
    assert all(0 <= row["miou"] <= 1 and row["num_points"] == 2 * 3000 for row in modes.values())
    assert summary["fusion"]["done"] == 4 and summary["fusion"]["failed"] == 0
    assert len(summary["distill"]["history"]) == 2
    assert list(summary["stage_seconds"]) == [
        "synthesising the world", "ingesting (scannet layout)", "fusing 2D features with label-oracle on a local Ray",
        "distilling MinkUNet18A with Ray Train (2 CPU workers)", "evaluating fusion / distill / ensemble",
        "answering open-vocabulary queries"]  # fmt: skip

    # Each query's best scene really contains the class, and its heatmap is a real picture.
    assert [q["query"] for q in summary["queries"]] == ["toilet", "refrigerator"]
    for query in summary["queries"]:
        assert query["scenes_with_class"], f"the reduced world should contain a {query['query']}"
        assert query["top_scenes"][0]["scene_id"] in query["scenes_with_class"], query
        image = np.asarray(Image.open(out / query["heatmap_png"]))
        assert image.ndim == 3 and image.shape[2] in (3, 4) and image.std() > 0

    report = (out / "report.md").read_text()
    assert "oracle" in report and "| fusion |" in report
    for mode in modes:
        assert f"evaluation/iou_{mode}.png" in report and (out / "evaluation" / f"iou_{mode}.png").exists()
    printed = capsys.readouterr().out
    assert "demo finished" in printed and str(out / "report.md") in printed
