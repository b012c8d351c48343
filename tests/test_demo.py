"""`openscene-ray demo` end to end on a reduced world: every stage runs, the table and the pictures hold."""

import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from openscene_ray.cli import main
from openscene_ray.demo.job import _Progress
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.visual import label_palette

STAGES = [
    "synthesising the world", "ingesting (scannet layout)",
    "training a tiny LSeg on the train rooms' views with Ray Train (2 epochs)",
    "fusing 2D features with lseg on a local Ray", "distilling MinkUNet18A with Ray Train (2 CPU workers)",
    "evaluating 2D per view / fusion / distill / ensemble on the held-out rooms", "answering open-vocabulary queries",
    "drawing the pictures",
]  # fmt: skip


def _image(path) -> np.ndarray:
    image = Image.open(path)
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(np.int64)


@pytest.mark.slow
def test_demo_trains_a_2d_model_and_reports_four_sources_with_pictures(ray_session, tmp_path, capfd):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--set", "num_scenes=4", "--set", "views_per_scene=6",
                 "--set", "points_per_scene=3000", "--set", "distill_epochs=2", "--set", "lseg_epochs=2",
                 "--set", "queries=[toilet, refrigerator]"]) == 0  # fmt: skip

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stage_seconds"]) == STAGES
    modes = summary["evaluation"]["modes"]
    assert list(modes) == ["2d", "fusion", "distill", "ensemble"]
    for mode, row in modes.items():
        assert 0 <= row["miou"] <= 1 and 0 <= row["macc"] <= 1, mode
    # fusion and 2d see the same points; the 3D network predicts every point
    assert modes["2d"]["coverage"] == pytest.approx(modes["fusion"]["coverage"])
    assert 0.5 < modes["fusion"]["coverage"] < 1
    assert modes["distill"]["coverage"] == modes["ensemble"]["coverage"] == 1.0
    assert summary["models"]["extractor"] == "lseg" and len(summary["train_2d"]["history"]) == 2
    assert summary["fusion"]["done"] == 4 and summary["fusion"]["failed"] == 0

    report = (out / "report.md").read_text()
    table = report[report.index("| source |"):].split("\n\n")[0].splitlines()
    assert table[0] == "| source | mIoU | mAcc | coverage |" and len(table) == 2 + 4
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 2D per view (LSeg, projected)", "| fusion", "| distill",
                                                          "| ensemble"]  # fmt: skip
    assert "41.4 / 46.0 / 47.5" in report and "What wins here" in report

    room, *heatmaps = summary["figures"]
    names = get_label_set("scannet20").class_names
    assert room["panels"] == ["ground truth", room["panels"][1], "fusion", "distill", "ensemble"]
    assert room["panels"][1].startswith("2D per view") and set(room["legend"]) <= set(names) and room["legend"]
    image = _image(out / room["png"])
    assert image.shape[0] > 500 and image.shape[1] > 1000 and image.std() > 20
    # the legend panel (bottom right) holds each listed class's colour patch
    legend = image[image.shape[0] // 2 :, 2 * image.shape[1] // 3 :]
    for name in room["legend"]:
        color = label_palette(len(names))[names.index(name)]
        assert (np.abs(legend - color).sum(axis=2) < 6).sum() > 50, name
    assert [h["query"] for h in heatmaps] == ["a toilet in a scene", "a refrigerator in a scene"]
    for heatmap in heatmaps:
        picture = _image(out / heatmap["png"])
        assert picture.shape[0] > 300 and picture.std() > 20
        assert f"![query: {heatmap['query']}]({heatmap['png']})" in report
    assert f"![segmentation of a held-out room]({room['png']})" in report

    printed = capfd.readouterr().out
    assert printed.count("\n") < 40  # one line per stage, the table, the queries; the logs go to a file
    assert "2D per view (LSeg, projected)" in printed and "openscene-ray view --manifest" in printed
    log = (out / "logs" / "demo.log").read_text()
    assert [line for line in log.splitlines() if line.startswith("=====")] == [
        f"===== [{i}/8] {stage}" for i, stage in enumerate(STAGES, start=1)
    ]


def test_stage_output_goes_to_the_log_file_and_one_line_to_the_console(tmp_path, capfd):
    """Python prints, native writes and child processes inside a stage all land in the log file."""
    log = tmp_path / "logs" / "demo.log"
    progress = _Progress(2, str(log))
    progress.begin("first stage")
    print("python noise", flush=True)
    os.write(2, b"native noise\n")
    subprocess.run(["echo", "child noise"], check=True)
    progress.end("(detail)")
    progress.close()
    console = capfd.readouterr()
    assert console.out.splitlines()[0] == "[1/2] first stage ..."
    assert console.out.splitlines()[1].startswith("      done in ") and console.out.rstrip().endswith("(detail)")
    assert "noise" not in console.out + console.err
    assert [line for line in log.read_text().splitlines() if "noise" in line] == ["python noise", "native noise", "child noise"]
