"""``ipo-ray``: run, pretrain, eval, serve, report (the entrypoints ``jobs/*.py`` share these parsers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/world-tiny.yaml", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set loop.rounds=2 (repeatable)")


def _load(args):
    from ipo_ray.config import load_config

    return load_config(args.config, args.overrides)


def ensure_base(cfg, log=print) -> None:
    """The embedded default pretrains the world base once and reuses the cached checkpoint."""
    from ipo_ray.policy import POLICY_FILE

    if cfg.model.source != "world_base":
        return
    path = Path(cfg.model.path or cfg.pretrain.out)
    if (path / POLICY_FILE).is_file():
        return
    from ipo_ray.pretrain import pretrain

    log(f"no world base at {path}: pretraining one ({cfg.pretrain.steps} steps, at most {cfg.pretrain.max_minutes} min)")
    pretrain(cfg, path, log=log)


def with_evaluation(summary: dict, finished: dict) -> dict:
    """The loop's summary with the evaluation's results; when the evaluation named the best version that the
    rollouts could not, their reason stays under ``rollouts_no_best``, as summary.json keeps it."""
    out = summary | finished
    if out.get("best_version") is not None and out.get("best_version_note"):
        out["rollouts_no_best"] = out.pop("best_version_note")
    return out


def cmd_run(args) -> int:
    from jobs.loop import Loop

    if args.resume:
        from ipo_ray.run_dir import RunDir

        cfg = RunDir(args.resume).config()
        if args.overrides:
            from ipo_ray.config import load_config
            import tempfile

            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                f.write((Path(args.resume) / "config.yaml").read_text())
            cfg = load_config(f.name, args.overrides)
        run_dir = args.resume
    else:
        cfg = _load(args)
        run_dir = args.run_dir or cfg.run_dir
    ensure_base(cfg)
    summary = Loop(cfg, run_dir, resume=bool(args.resume)).run_all()
    if not args.no_eval:
        from jobs.report import finish_run

        summary = with_evaluation(summary, finish_run(cfg, summary["run_dir"]))
    print(json.dumps(summary, indent=2))
    print(f"\nrun directory: {summary['run_dir']}")
    print(f"policy checkpoints: {summary['run_dir']}/policies (latest v{summary['final_version']})")
    if summary.get("best_version") is not None:
        by = summary.get("best_version_by", "rollouts")
        how = "its own rollouts (critic scores)" if by == "rollouts" else by
        print(f"best by {how}: v{summary['best_version']} (--version best)")
    elif summary.get("best_version_note"):
        print(summary["best_version_note"])
    if summary.get("report"):
        print(f"report: {summary['report']}")
    return 0


def cmd_pretrain(args) -> int:
    from ipo_ray.pretrain import pretrain

    cfg = _load(args)
    pretrain(cfg, args.out or cfg.pretrain.out)
    return 0


def cmd_eval(args) -> int:
    from ipo_ray.evaluate import evaluate_policy, load_for_eval, read_prompts, set_threads

    set_threads()
    policy, version = load_for_eval(args.run_dir, args.version)
    summary = evaluate_policy(policy, read_prompts(args.prompts), args.seeds, args.out, version=version,
                              steps=args.steps or policy_steps(args.run_dir), guidance_scale=args.guidance_scale,
                              seed_offset=args.seed_offset, save_videos=not args.no_videos)
    print(json.dumps(summary, indent=2))
    return 0


def policy_steps(run_dir: str) -> int:
    cfg_file = Path(run_dir) / "config.yaml"
    if cfg_file.is_file():
        from ipo_ray.config import load_config

        return load_config(cfg_file).sampling.steps
    return 20


def cmd_serve(args) -> int:
    """Deploy the Serve app on 127.0.0.1 (by default) and block until Ctrl-C / SIGTERM."""
    from ipo_ray.config import ConfigError, parse_overrides
    from ipo_ray.serve import serve_forever

    overrides: dict = {}
    for key, value in parse_overrides(args.overrides):
        parts = key.split(".")
        if parts[0] != "serve" or len(parts) < 2:
            raise ConfigError(f"config error: --set {key}: only serve.* fields can be set here, e.g. serve.max_batch_size=16")
        node = overrides
        for k in parts[1:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = value
    if args.no_batching:
        overrides["batching"] = False
    return serve_forever(args.run_dir, version=args.version, host=args.host, port=args.port, token=args.token,
                         serve_overrides=overrides, address=args.address)


def cmd_report(args) -> int:
    from jobs.report import main as report_main

    return report_main(["--run-dir", args.run_dir] + (["--no-eval"] if args.no_eval else []))


def cmd_eval_critic(args) -> int:
    from jobs.eval_critic import run

    return run(args)


VERSION_HELP = ("'base', 'best' (the version whose own rollouts the critic scored best, from summary.json), "
                "a policy version number; default the latest")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ipo-ray", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run the preference-optimisation loop on Ray")
    _config_args(p)
    p.add_argument("--run-dir", help="where the run writes (default: config run_dir)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run exactly where it stopped")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation and report")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("pretrain", help="pretrain the tiny world base")
    _config_args(p)
    p.add_argument("--out", help="checkpoint directory (default: pretrain.out)")
    p.set_defaults(fn=cmd_pretrain)
    p = sub.add_parser("eval", help="sample fixed prompts x seeds from a checkpoint and judge them")
    p.add_argument("--run-dir", required=True, help="a run directory, or a base checkpoint directory")
    p.add_argument("--version", default=None, help=VERSION_HELP)
    p.add_argument("--prompts", default="world:train", help="world:train | world:heldout | .txt | .parquet | .jsonl")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--seed-offset", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance-scale", type=float, default=2.0)
    p.add_argument("--no-videos", action="store_true")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("serve", help="serve a run's tuned generator over HTTP (Ray Serve)")
    p.add_argument("--run-dir", required=True, help="a run directory, or a base checkpoint directory")
    p.add_argument("--version", default=None, help=VERSION_HELP)
    p.add_argument("--host", default=None, help="HTTP bind address (default serve.host: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default serve.port: 8000)")
    p.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' (default: env IPO_RAY_SERVE_TOKEN; none = open)")
    p.add_argument("--address", default=None, help="join this Ray cluster instead of starting a local one")
    p.add_argument("--no-batching", action="store_true", help="sample requests one at a time")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="serve.KEY=VALUE",
                   help="override the run's serve section, e.g. --set serve.max_batch_size=16 (repeatable)")
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("report", help="evaluate a run's checkpoints and write RUN_DIR/report.html")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--no-eval", action="store_true", help="only rebuild the HTML from what is there")
    p.set_defaults(fn=cmd_report)
    from jobs.eval_critic import add_args as eval_critic_args

    p = sub.add_parser("eval-critic", help="pairwise / pointwise accuracy of the configured critic on labelled data")
    eval_critic_args(p)
    p.set_defaults(fn=cmd_eval_critic)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ipo-ray: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
