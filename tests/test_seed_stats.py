"""Seed statistics over learning rows (benchmarks/seeds.py): the means, spreads and paired differences the RESULTS
notes quote, against hand-computed values."""

import json
import math

import pytest

from benchmarks import seeds


def test_mean_sd_se_by_hand():
    m, sd, se = seeds.mean_sd_se([1.0, 2.0, 6.0])  # mean 3, squared deviations 4 + 1 + 9 = 14, / 2 = 7
    assert m == 3.0 and sd == pytest.approx(math.sqrt(7)) and se == pytest.approx(math.sqrt(7 / 3))
    assert math.isnan(seeds.mean_sd_se([5.0])[1])
    with pytest.raises(ValueError, match="no values"):
        seeds.mean_sd_se([])


def test_gains_in_points_and_every_round_better():
    evals = [{"train": 0.2, "heldout": 0.10}, {"train": 0.3, "heldout": 0.15}, {"train": 0.45, "heldout": 0.12}]
    g = seeds.gains(evals)
    assert g["train"] == pytest.approx(25.0) and g["heldout"] == pytest.approx(2.0)
    assert g["train_monotone"] is True and g["heldout_monotone"] is False


def test_parse_seeds_ranges_and_lists():
    assert seeds.parse_seeds("0-3") == [0, 1, 2, 3]
    assert seeds.parse_seeds("0,2,4-5") == [0, 2, 4, 5]


def test_pairs_only_matched_seeds_and_names_missing_rows(tmp_path, capsys, monkeypatch):
    def row(name, train, heldout):
        evals = [{"train": 0.2, "heldout": 0.1}, {"train": 0.2 + train / 100, "heldout": 0.1 + heldout / 100}]
        (tmp_path / f"{name}.json").write_text(json.dumps({"name": name, "evals": evals}))

    row("a", 10, 4), row("a-seed1", 14, 8), row("a-seed2", 12, 6)
    row("b", 8, 5), row("b-seed1", 10, 5)
    monkeypatch.setattr(seeds, "ROWS", tmp_path)
    seeds.main(["a", "b", "--seeds", "0-2"])
    out, err = capsys.readouterr()
    assert "b: no row for seed 2 (b-seed2.json)" in err
    assert "train    +10.0, +14.0, +12.0  mean +12.0  SD 2.0  SE 1.2" in out
    # paired at seeds 0 and 1 only: differences +2, +4 (train), -1, +3 (held-out)
    assert "a minus b, paired at seeds 0, 1:" in out
    assert "train    +2.0, +4.0  mean +3.0  SD 1.4  SE 1.0  t 3.0" in out
    assert "heldout  -1.0, +3.0  mean +1.0  SD 2.8  SE 2.0  t 0.5" in out
