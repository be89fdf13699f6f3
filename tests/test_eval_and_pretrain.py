import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from ipo_ray.world import judge

from .conftest import ROOT, TINY


def test_pretrain_job_at_a_small_budget_then_eval(tmp_path):
    """The pretraining job (what made the committed base) still runs, and eval reads its output."""
    from jobs.cli import main

    out = tmp_path / "base"
    assert main(["pretrain", "--config", str(ROOT / "configs" / "world-tiny.yaml"), "--out", str(out),
                 *sum((["--set", o] for o in TINY + ["pretrain.steps=30", "pretrain.batch_size=4",
                                                         "pretrain.shape_pairs=1", "pretrain.shape_weight=5"]), [])]) == 0
    info = json.loads((out / "pretrain_info.json").read_text())
    assert info["steps"] == 30 and info["flawed_fraction"] == 0.3 and info["shape_pairs"] == 1
    # a continuation that grows the transformer by a block (what the committed base's last stage did)
    grown = tmp_path / "grown"
    assert main(["pretrain", "--config", str(ROOT / "configs" / "world-tiny.yaml"), "--out", str(grown),
                 *sum((["--set", o] for o in TINY + ["pretrain.steps=3", "pretrain.batch_size=4",
                                                         f"pretrain.init_from={out}", "pretrain.grow_layers=1"]), [])]) == 0
    assert json.loads((grown / "transformer" / "config.json").read_text())["num_layers"] == 2
    assert json.loads((grown / "pretrain_info.json").read_text())["grow_layers"] == 1
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moves from left to right\na blue circle grows\n")
    assert main(["eval", "--run-dir", str(out), "--version", "base", "--prompts", str(prompts), "--seeds", "3",
                 "--steps", "2", "--out", str(tmp_path / "eval")]) == 0
    t = pq.read_table(tmp_path / "eval" / "samples.parquet").to_pylist()
    assert len(t) == 6
    assert {"prompt", "seed", "policy_version", "score", "frames_path", "video_path"} <= set(t[0])
    for r in t:
        frames = np.load(r["frames_path"])
        assert frames.dtype == np.uint8 and frames.shape == (8, 16, 16, 3)
        assert judge(frames, r["prompt"]) == pytest.approx(r["score"])
        assert r["policy_version"] == 0 and r["video_path"].endswith(".gif")
    s = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert s["all"]["n"] == 6 and 0 <= s["all"]["acceptance"] <= 1
    assert {"temporal_flicker", "dynamic_degree", "motion_smoothness"} <= set(s)


def test_shape_pairs_show_one_scene_with_each_shape_under_its_own_train_caption():
    from ipo_ray.config import load_config
    from ipo_ray.pretrain import shape_pairs_batch
    from ipo_ray.world import judge_details, splits

    train = splits()["train"]
    prompts, videos, diff = shape_pairs_batch(np.random.default_rng(3), train, 12, load_config(ROOT / "configs" / "world-tiny.yaml"))
    assert len(prompts) == 24 and videos.shape == (24, 8, 16, 16, 3) and diff.shape == (24, 8, 16, 16)
    assert set(prompts) <= set(train)  # a swapped caption that is held out is never shown
    for i in range(0, 24, 2):
        a, b = prompts[i], prompts[i + 1]
        assert a.replace("square", "#").replace("circle", "#") == b.replace("square", "#").replace("circle", "#") and a != b
        assert (videos[i] != videos[i + 1]).any(axis=-1).tolist() == diff[i].tolist() and diff[i].any()
        for v, p, other in ((videos[i], a, b), (videos[i + 1], b, a)):
            assert judge_details(v, p)["score"] >= 0.95 and judge_details(v, other)["shape"] < 0.5


def test_a_grown_transformer_starts_as_the_old_one_and_its_new_blocks_learn():
    import torch

    from ipo_ray.policy import T2VPolicy
    from ipo_ray.pretrain import grow_transformer

    from .conftest import tiny_config

    torch.manual_seed(0)
    policy = T2VPolicy.build_tiny(tiny_config("model.tiny.num_layers=3").model)
    old = policy.transformer
    for extra, order in ((1, [0, 1, 2, None]), (2, [0, None, 1, None, 2]), (4, [0, None, 1, None, 2, None, None])):
        grown, got = grow_transformer(old, extra)
        assert got == order and grown.config.num_layers == 3 + extra
    x = torch.randn(2, *policy.latent_shape())
    cond, t = policy.encode_prompts(["a red square falls down"] * 2), torch.tensor([700, 100])
    out = old(hidden_states=x, encoder_hidden_states=cond, timestep=t, return_dict=False)[0]
    new = grown(hidden_states=x, encoder_hidden_states=cond, timestep=t, return_dict=False)[0]
    assert torch.equal(out, new)  # exactly the old function
    new.pow(2).mean().backward()
    added = grown.transformer_blocks[1].norm1.linear.weight.grad
    assert added is not None and added.abs().sum() > 0  # the zero gates get gradient: the new blocks can learn


def test_eval_prompt_files(tmp_path):
    import pyarrow as pa

    from ipo_ray.evaluate import read_prompts

    pq.write_table(pa.table({"prompt": ["a red square grows"]}), tmp_path / "p.parquet")
    assert read_prompts(str(tmp_path / "p.parquet")) == ["a red square grows"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a blue circle grows"}\n')
    assert read_prompts(str(tmp_path / "p.jsonl")) == ["a blue circle grows"]
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'prompt' column"):
        read_prompts(str(tmp_path / "bad.parquet"))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_prompts(str(tmp_path / "missing.txt"))
    assert len(read_prompts("world:heldout")) >= 8


def test_finish_run_evaluates_256_samples_per_split_and_caches_the_base(tmp_path, tiny_base, monkeypatch):
    """Each split gets at least eval.min_samples_per_split samples (10 held-out prompts -> 26 seeds
    each); the base's evaluation is computed once and reused by the next run with the same base."""
    from ipo_ray.run_dir import RunDir
    from jobs.report import eval_plan, finish_run

    from .conftest import tiny_config

    monkeypatch.setenv("IPO_RAY_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config("eval.seeds=1", "eval.min_samples_per_split=20", "sampling.steps=1", base=tiny_base)
    prompts, seeds = eval_plan(cfg)
    n_train, n_held = seeds.count(1), seeds.count(2)
    assert n_train == 50 and n_held == 10  # 50 train prompts x 1 seed >= 20; 10 held-out x 2 = 20
    assert eval_plan(tiny_config("eval.min_samples_per_split=256", base=tiny_base))[1][-1] == 26  # 256 / 10 prompts
    outs = []
    for name in ("a", "b"):
        RunDir(tmp_path / name).write_config(cfg)
        res = finish_run(cfg, str(tmp_path / name), log=lambda *_: None)
        s = json.loads((tmp_path / name / "eval" / "v000000" / "summary.json").read_text())
        assert s["train"]["n"] == 50 and s["heldout"]["n"] == 20
        outs.append((res, s, pq.read_table(tmp_path / name / "eval" / "v000000" / "samples.parquet").to_pylist()))
    (ra, sa, rows_a), (rb, sb, rows_b) = outs
    assert sa["seconds"] == sb["seconds"]  # the second run reused the first run's evaluation
    assert [r["score"] for r in rows_a] == [r["score"] for r in rows_b]
    # ...and its video paths point into its own run directory, to files that exist.
    assert all(str(tmp_path / "b") in r["video_path"] and (tmp_path / "b").exists() for r in rows_b)
    assert all(np.load(r["frames_path"]).shape == (8, 16, 16, 3) for r in rows_b[:3])
    page = (tmp_path / "b" / "report.html").read_text()
    # Self-contained: the base's videos are inline GIFs, one per shown prompt x seed, with their scores.
    assert page.count("data:image/gif;base64,") >= 6 and "src=''" not in page
    assert "eval acceptance per checkpoint" in page and "<svg" in page


def test_a_base_evaluation_shipped_with_the_base_is_found_by_a_fresh_clone(tmp_path, tiny_base, monkeypatch):
    """``--ship-base-eval`` puts a run's base evaluation beside the base (no GIFs, bare file names); a run on
    a machine with an empty cache and the base at another path (a fresh clone) reuses it, with its own
    videos, the GIFs rebuilt from the lossless frames."""
    from ipo_ray.run_dir import RunDir
    from jobs.report import base_eval_key, eval_plan, finish_run, main

    from .conftest import tiny_config

    base = tmp_path / "clone1" / "base"
    shutil.copytree(tiny_base, base)
    monkeypatch.setenv("IPO_RAY_CACHE", str(tmp_path / "cache1"))
    cfg = tiny_config("eval.seeds=1", "eval.min_samples_per_split=10", "sampling.steps=1", base=str(base))
    RunDir(tmp_path / "a").write_config(cfg)
    finish_run(cfg, str(tmp_path / "a"), log=lambda *_: None)
    assert main(["--run-dir", str(tmp_path / "a"), "--ship-base-eval"]) == 0
    key = base_eval_key(cfg, *eval_plan(cfg))
    shipped = base / "eval" / key
    assert not list(shipped.rglob("*.gif")) and len(list(shipped.rglob("*.npy"))) == 60
    assert all("/" not in p for p in pq.read_table(shipped / "samples.parquet").column("video_path").to_pylist())

    clone = tmp_path / "clone2" / "base"  # another path, the same weights: the same key
    shutil.copytree(base, clone)
    monkeypatch.setenv("IPO_RAY_CACHE", str(tmp_path / "cache2"))
    cfg2 = tiny_config("eval.seeds=1", "eval.min_samples_per_split=10", "sampling.steps=1", base=str(clone))
    assert base_eval_key(cfg2, *eval_plan(cfg2)) == key
    RunDir(tmp_path / "b").write_config(cfg2)
    logs = []
    finish_run(cfg2, str(tmp_path / "b"), log=logs.append)
    assert any("cached base evaluation" in x for x in logs)
    ra = pq.read_table(tmp_path / "a" / "eval" / "v000000" / "samples.parquet").to_pylist()
    rb = pq.read_table(tmp_path / "b" / "eval" / "v000000" / "samples.parquet").to_pylist()
    assert [r["score"] for r in rb] == [r["score"] for r in ra]
    for x, y in zip(ra, rb):
        assert y["video_path"].startswith(str(tmp_path / "b" / "eval")) and y["frames_path"].startswith(str(tmp_path / "b"))
        assert open(y["video_path"], "rb").read() == open(x["video_path"], "rb").read()  # the same GIF, rebuilt
    # Other weights (one byte of the transformer's): another key, so nothing shipped for the first base is used.
    weights = sorted((clone / "transformer").glob("*.safetensors"))[0]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert base_eval_key(cfg2, *eval_plan(cfg2)) != key


def test_copied_evaluation_points_at_its_own_videos(tmp_path):
    """The cached base evaluation is copied in and out of run dirs: the copy's Parquet must name
    the copy's files, and the source must be untouched."""
    import pyarrow as pa

    from jobs.report import _copy_eval

    src = tmp_path / "run" / "eval" / "v000000"
    (src / "videos").mkdir(parents=True)
    for i in range(2):
        (src / "videos" / f"{i}.mp4").write_bytes(b"video%d" % i)
        (src / "videos" / f"{i}.npy").write_bytes(b"frames%d" % i)
    (src / "summary.json").write_text(json.dumps({"train": {"acceptance": 0.25}}))
    pq.write_table(pa.table({"video_path": [str(src / "videos" / f"{i}.mp4") for i in range(2)],
                             "frames_path": [str(src / "videos" / f"{i}.npy") for i in range(2)],
                             "accept": [True, False]}), src / "samples.parquet")
    dst = tmp_path / "cache" / "abc"
    dst.mkdir(parents=True)
    (dst / "stale.txt").write_text("from an interrupted copy")
    _copy_eval(src, dst)
    t = pq.read_table(dst / "samples.parquet").to_pydict()
    assert t["accept"] == [True, False]
    assert [open(p, "rb").read() for p in t["video_path"]] == [b"video0", b"video1"]
    assert all(p.startswith(str(dst) + "/") for p in t["video_path"] + t["frames_path"])
    assert not (dst / "stale.txt").exists() and not dst.with_name("abc.tmp").exists()
    assert pq.read_table(src / "samples.parquet").to_pydict()["video_path"][0] == str(src / "videos" / "0.mp4")


def test_best_version_rule_and_a_clear_error_without_one(tmp_path):
    """Selection by the rollouts' own critic scores: acceptance, then mean score, then the later version."""
    from ipo_ray.report import NO_BEST_PAIRWISE, best_version
    from ipo_ray.run_dir import RunDir

    r = lambda v, a, m: {"policy_version": v, "acceptance": a, "mean_score": m, "n": 8}  # noqa: E731
    assert best_version([]) is None
    assert best_version([r(0, 0.5, 0.6), r(1, 0.7, 0.5), r(2, 0.6, 0.9)]) == 1
    assert best_version([r(0, 0.5, 0.6), r(1, 0.5, 0.7), r(2, 0.5, 0.65)]) == 1
    assert best_version([r(0, 0.5, 0.6), r(1, 0.5, 0.6)]) == 1
    # A pairwise critic's scores are within-group win rates (mean 0.5 whatever the version): no pick.
    assert best_version([r(0, 0.165, 0.5), r(1, 0.155, 0.5)], protocol="pairwise") is None
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(ValueError, match="--version best: .* no best_version in summary.json"):
        run.best_version()
    (run.path / "summary.json").write_text(json.dumps({"best_version": None, "best_version_note": NO_BEST_PAIRWISE}))
    with pytest.raises(ValueError, match="--version best: .* the critic is pairwise, .* pass --version N"):
        run.best_version()
    (run.path / "summary.json").write_text('{"best_version": 3}')
    assert run.best_version() == 3


def test_pretraining_data_mix_follows_word_weights_and_the_chosen_flaws():
    from ipo_ray.config import load_config
    from ipo_ray.pretrain import prompt_probs, world_batch
    from ipo_ray.world import FLAWS, judge_details, splits

    assert load_config(ROOT / "configs" / "world-tiny.yaml").pretrain.flaws == list(FLAWS)  # default: every flaw
    train = splits()["train"]
    p = prompt_probs(train, {"square": 2.0})
    weight = {t: 4.0 if t.count("square") == 2 else 2.0 if "square" in t else 1.0 for t in train}
    assert np.allclose(p, [weight[t] / sum(weight.values()) for t in train])
    cfg = load_config(ROOT / "configs" / "world-tiny.yaml", ["pretrain.word_weights={circle: 3}", "pretrain.flaws=[frozen]"])
    prompts, videos = world_batch(np.random.default_rng(0), train, 400, cfg, 1.0)
    share = np.mean(["circle" in t for t in prompts])
    expect = sum(pi for t, pi in zip(train, prompt_probs(train, {"circle": 3.0})) if "circle" in t)
    assert abs(share - expect) < 0.06 and expect > np.mean(["circle" in t for t in train]) + 0.15
    # every clip carries the one allowed flaw: frozen frames, so no motion
    assert all((v == v[0]).all() for v in videos[:40])
    assert all(judge_details(v, t)["motion"] == 0.0 for v, t in zip(videos[:40], prompts[:40]) if "grows" not in t)


def test_without_the_final_versions_rollouts_the_evaluations_train_prompts_name_the_best(tmp_path):
    """``loop.score_final`` off (the default): the rollouts cannot name the final version, so they name none;
    ``finish_run``'s evaluation names it from the train split (never held-out) and rewrites summary.json."""
    from ipo_ray.report import NO_BEST_PAIRWISE, best_fields
    from ipo_ray.run_dir import RunDir
    from jobs.report import name_best_by_eval

    r = lambda v, a: {"policy_version": v, "acceptance": a, "mean_score": a, "n": 8}  # noqa: E731
    rollouts = [r(0, 0.2), r(1, 0.5), r(2, 0.3)]
    assert best_fields(rollouts, "score", final_version=2) == {"best_version": 1, "best_version_by": "rollouts"}
    unscored = best_fields(rollouts, "score", final_version=3)
    assert unscored["best_version"] is None and "final version v3 rolled nothing out" in unscored["best_version_note"]
    assert best_fields(rollouts, "pairwise", final_version=2)["best_version_note"] == NO_BEST_PAIRWISE

    run = RunDir(tmp_path / "run")
    split = lambda a, m: {"acceptance": a, "mean_score": m, "n": 100}  # noqa: E731
    evals = {0: (split(0.28, 0.4), split(0.06, 0.2)), 1: (split(0.30, 0.5), split(0.30, 0.5)),
             2: (split(0.38, 0.5), split(0.10, 0.3)), 3: (split(0.38, 0.6), split(0.05, 0.3))}
    for v, (train, held) in evals.items():
        d = run.path / "eval" / f"v{v:06d}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"policy_version": v, "train": train, "heldout": held}))
    (run.path / "summary.json").write_text(json.dumps({"final_version": 3, "rollouts": rollouts, **unscored}))
    # v2 and v3 tie on train acceptance, v3's mean score is higher; v1's held-out lead does not count.
    assert name_best_by_eval(run) == {"best_version": 3, "best_version_by": "evaluation (train prompts)"}
    s = json.loads((run.path / "summary.json").read_text())
    assert s["best_version"] == 3 and "best_version_note" not in s and s["rollouts"] == rollouts
    assert s["rollouts_no_best"] == unscored["best_version_note"]  # why the rollouts named none, kept
    from jobs.cli import with_evaluation  # what `ipo-ray run` prints says the same as the file
    loop_summary = {"final_version": 3, "rollouts": rollouts, **unscored}
    printed = with_evaluation(loop_summary, {"best_version": 3, "best_version_by": "evaluation (train prompts)"})
    assert {k: printed[k] for k in ("best_version", "best_version_by", "rollouts_no_best")} == \
        {k: s[k] for k in ("best_version", "best_version_by", "rollouts_no_best")} and "best_version_note" not in printed
    assert with_evaluation(loop_summary, {"eval": {}})["best_version_note"] == unscored["best_version_note"]
    assert run.best_version() == 3 and not list(run.path.glob("*.tmp"))
    assert name_best_by_eval(run) == {}  # named once; a rollout-named best is never overridden
    (run.path / "summary.json").write_text(json.dumps({"final_version": 4, **best_fields(rollouts, "score", 4)}))
    assert name_best_by_eval(run) == {}  # v4 not evaluated: nothing named, the note stays
    with pytest.raises(ValueError, match="--version best: .* final version v4 rolled nothing out"):
        run.best_version()
