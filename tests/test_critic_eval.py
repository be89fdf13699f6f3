"""Critic evaluation (IPO Table 6 analogue) on a small world labelled set, labels from the world judge."""

import json

import numpy as np
import pytest

from ipo_ray.config import CriticConfig
from ipo_ray.critic import make_critic
from ipo_ray.critic.evaluation import evaluate, majority, read_labelled, world_labelled_set


@pytest.fixture(scope="module")
def world_set(tmp_path_factory):
    return world_labelled_set(tmp_path_factory.mktemp("critic-eval"), pairs=24, points=24, seed=0, annotators=3,
                              annotator_accuracy=0.9)


def test_majority_vote():
    assert majority(["A", "B", "A"]) == "A" and majority(["Good"]) == "Good"
    assert majority(["A", "B"]) is None and majority([]) is None


def test_world_labelled_set_and_accuracies(world_set):
    items = read_labelled(world_set)
    pairs = [i for i in items if i["task"] == "pairwise"]
    points = [i for i in items if i["task"] == "pointwise"]
    assert len(points) == 24 and 20 <= len(pairs) <= 24 and all(len(i["labels"]) == 3 for i in items)
    assert {majority(i["labels"]) for i in points} <= {"Good", "Normal", "Bad", None}  # None: a 3-way split
    exact = evaluate(make_critic(CriticConfig(backend="world")), items)
    assert exact["pairwise_n"] == len(pairs) and exact["pointwise_n"] + exact.get("pointwise_no_majority", 0) == 24
    assert exact["pairwise_accuracy"] >= 0.85 and exact["pointwise_accuracy"] >= 0.85  # vs. 3 annotators at 90%
    assert exact["pairwise_coverage"] == 1.0
    blind = evaluate(make_critic(CriticConfig(backend="world", noise_accuracy=0.55, protocol="pointwise")), items)
    assert blind["critic"] == "world~acc0.55"
    assert blind["pairwise_accuracy"] < exact["pairwise_accuracy"]
    assert blind["pointwise_accuracy"] < exact["pointwise_accuracy"]
    assert blind["critic_stats"]["noise_flips"] > 0


def test_parquet_labels_with_inline_videos(world_set, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for it in read_labelled(world_set)[:3] + read_labelled(world_set)[-3:]:
        r = {"task": it["task"], "prompt": it["prompt"], "labels": it["labels"]}
        for k in ("video", "video_a", "video_b"):  # the .npy bytes inline; None where the task has no such video
            r[k] = None
            if it.get(k):
                buf = io.BytesIO()
                np.save(buf, np.load(world_set.parent / it[k]))
                r[k] = buf.getvalue()
        rows.append(r)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "labels.parquet")
    res = evaluate(make_critic(CriticConfig()), read_labelled(tmp_path / "labels.parquet"))
    assert res["pairwise_n"] + res.get("pairwise_reference_ties", 0) == 3 and res["pointwise_n"] == 3


@pytest.mark.parametrize("line,expect", [
    ({"task": "ranking"}, r"item 1: task: unknown 'ranking'"),
    ({"task": "pairwise", "prompt": "p", "video_a": "a.npy", "labels": ["A"]}, r"item 1: video_b: required"),
    ({"task": "pointwise", "prompt": "p", "video": "v.npy", "labels": ["Great"]}, r"item 1: labels: unknown 'Great'"),
    ({"task": "pointwise", "prompt": "p", "video": "v.npy"}, r"item 1: labels: at least one"),
    (["pointwise", "p"], r"item 1: expected a JSON object, got list"),
])
def test_bad_labelled_data_is_a_one_line_error(tmp_path, line, expect):
    f = tmp_path / "labels.jsonl"
    f.write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=expect) as err:
        read_labelled(f)
    assert "\n" not in str(err.value)


def test_cli_eval_critic(world_set, tmp_path, capsys):
    from jobs.cli import main

    out = tmp_path / "acc.json"
    assert main(["eval-critic", "--data", str(world_set), "--set", "critic.noise_accuracy=0.8",
                 "--set", "critic.protocol=pairwise", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["backend"] == "world" and res["noise_accuracy"] == 0.8 and 0.0 <= res["pairwise_accuracy"] <= 1.0
    assert json.loads(capsys.readouterr().out)["critic"] == "world~acc0.8"
    assert main(["eval-critic", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "labelled data: file" in capsys.readouterr().err


def test_cli_world_set_is_reused_only_when_it_is_the_one_asked_for(tmp_path, capsys):
    from jobs.cli import main

    ws = tmp_path / "set"
    assert main(["eval-critic", "--world-set", str(ws), "--pairs", "3", "--points", "3"]) == 0
    first = (ws / "labels.jsonl").read_text()
    assert json.loads((ws / "params.json").read_text())["pairs"] == 3 and not (ws / "labels.jsonl.tmp").exists()
    assert main(["eval-critic", "--world-set", str(ws), "--pairs", "3", "--points", "3"]) == 0
    capsys.readouterr()
    assert main(["eval-critic", "--world-set", str(ws), "--pairs", "5", "--points", "3"]) == 2
    err = capsys.readouterr().err
    assert "--world-set" in err and "pairs=3" in err and "pairs=5" in err
    assert (ws / "labels.jsonl").read_text() == first  # the existing set is untouched


def test_a_single_label_string_and_bad_videos(tmp_path):
    from ipo_ray.critic.evaluation import load_video

    f = tmp_path / "labels.jsonl"
    f.write_text(json.dumps({"task": "pointwise", "prompt": "p", "video": "v.npy", "labels": "Good"}) + "\n")
    assert [it["labels"] for it in read_labelled(f)] == [["Good"]]
    np.save(tmp_path / "float.npy", np.zeros((2, 4, 4, 3), np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"float.npy'?: dtype float32; expected uint8"):
        load_video("float.npy", tmp_path)
    with pytest.raises(ValueError, match=r"flat.npy'?: shape \(4, 4, 3\); expected \(frames"):
        load_video("flat.npy", tmp_path)
