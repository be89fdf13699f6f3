import pytest

from ipo_ray.config import ConfigError, load_config

from .conftest import ROOT

PRESETS = ["world-tiny.yaml", "cogvideox-2b.yaml"]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_validate(preset):
    cfg = load_config(ROOT / "configs" / preset)
    assert cfg.name


def test_overrides_apply_with_yaml_types():
    cfg = load_config(ROOT / "configs" / "world-tiny.yaml", ["loop.rounds=2", "algo.beta=250", "loop.mode=semi_online"])
    assert cfg.loop.rounds == 2 and cfg.algo.beta == 250.0 and cfg.loop.mode == "semi_online"


@pytest.mark.parametrize("override,expect", [
    ("loop.mode=sideways", r"^config error: loop\.mode: Input should be 'rounds' or 'semi_online' \(got 'sideways'\)$"),
    ("loop.rounds=0", r"^config error: loop\.rounds: Input should be greater than or equal to 1 \(got 0\)$"),
    ("algo.colour=red", r"^config error: algo\.colour: unknown field$"),
    ("train.lr=fast", r"^config error: train\.lr: Input should be a valid number"),
    ("critic.backend=gpt", r"^config error: critic\.backend: Input should be "),
    ("pretrain.grow_layers=2", r"^config error: pretrain\.grow_layers: needs pretrain\.init_from"),
    ("pretrain.word_weights={sqaure: 2}", r"^config error: pretrain\.word_weights: unknown word 'sqaure'; allowed: a, and, "),
    ("pretrain.flaws=[melt]", r"^config error: pretrain\.flaws\.0: Input should be 'reversed', 'vanish'"),
    ("rounds", r"expected key=value"),
])
def test_errors_are_one_line_and_name_the_field(override, expect):
    with pytest.raises(ConfigError, match=expect) as err:
        load_config(ROOT / "configs" / "world-tiny.yaml", [override])
    assert "\n" not in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("model:\n  source: pretrained\n")
    with pytest.raises(ConfigError, match=r"model\.path: required"):
        load_config(bad)


def test_cli_reports_config_errors_in_one_line(capsys):
    from jobs.cli import main

    assert main(["run", "--config", str(ROOT / "configs" / "world-tiny.yaml"), "--set", "loop.mode=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ipo-ray: error: config error: loop.mode") and "\n" not in err


def test_the_ipo_ray_command_is_installed():
    import shutil
    import subprocess

    exe = shutil.which("ipo-ray")
    assert exe, "the ipo-ray console script is not on PATH (pip install -e .)"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "run" in out.stdout and "eval" in out.stdout


def test_train_workers_reserve_the_configured_resources():
    """The TorchTrainer's ScalingConfig: CPUs per worker, and on GPU a whole or fractional card per worker."""
    from jobs.loop import scaling_for

    cpu = scaling_for(load_config(ROOT / "configs" / "world-tiny.yaml"))
    assert cpu.num_workers == 2 and not cpu.use_gpu and cpu.num_gpus_per_worker == 0
    shared = scaling_for(load_config(ROOT / "configs" / "cogvideox-2b.yaml", ["train.gpus_per_worker=0.5"]))
    assert shared.use_gpu and shared.num_gpus_per_worker == 0.5 and shared.num_cpus_per_worker == 4
    assert scaling_for(load_config(ROOT / "configs" / "cogvideox-2b.yaml")).num_gpus_per_worker == 1
    with pytest.raises(ConfigError, match="train.gpus_per_worker"):
        load_config(ROOT / "configs" / "cogvideox-2b.yaml", ["train.gpus_per_worker=0"])
