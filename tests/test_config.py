import pytest

from kr.config import PRESETS, Config, load_config
from kr.errors import ConfigError


def test_defaults_are_the_cpu_preset():
    assert load_config("cpu") == Config(preset="cpu")


def _leaves(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", list(v) if isinstance(v, tuple) else v


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_resolves_to_its_own_values(preset):
    """Every value a preset sets is the resolved config's (a preset silently dropped, or one
    key shadowed by another, would leave the defaults)."""
    resolved = dict(_leaves(load_config(preset).to_dict()))
    assert resolved["preset"] == preset
    for key, value in _leaves(PRESETS[preset]):
        assert resolved[key] == value, key
    if preset != "cpu":
        defaults = dict(_leaves(load_config("cpu").to_dict()))
        assert any(defaults[k] != v for k, v in _leaves(PRESETS[preset]))


def test_tiny_is_smaller_than_cpu_and_paper_is_larger():
    tiny, cpu, paper = (load_config(p).teacher for p in ("tiny", "cpu", "paper"))
    assert tiny.train.epochs < cpu.train.epochs < paper.train.epochs
    assert tiny.model.width <= cpu.model.width <= paper.model.width


def test_overrides_parse_yaml_scalars_and_nest():
    c = load_config("tiny", overrides=["teacher.train.lr=0.2", "teacher.model.arch=resnet14",
                                       "seed=7", "teacher.train.epochs=3"])
    assert c.teacher.train.lr == 0.2 and c.teacher.model.arch == "resnet14"
    assert c.seed == 7 and c.teacher.train.epochs == 3
    assert c.teacher.model.width == 8  # untouched preset value survives


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config("cpu", overrides=["teacher.train.lr=1"]).teacher.train.lr == 1.0
    with pytest.raises(ConfigError, match="teacher.train.epochs: expected int"):
        load_config("cpu", overrides=["teacher.train.epochs=2.5"])


def test_exponent_without_a_dot_is_a_float():
    # YAML 1.1 (PyYAML) reads 5e-4 as the string "5e-4"; a float setting takes it as 0.0005
    assert load_config("cpu", overrides=["generator.gan.lr_g=5e-4"]).generator.gan.lr_g == 5e-4
    with pytest.raises(ConfigError, match="teacher.train.lr: expected float, got 'fast'"):
        load_config("cpu", overrides=["teacher.train.lr=fast"])


@pytest.mark.parametrize("override, message", [
    ("teacher.train.epoch=3", "unknown config key 'teacher.train.epoch'"),
    ("teacher.train.epochs=0", "teacher.train.epochs: must be ≥ 1"),
    ("teacher.model.arch=vgg", "teacher.model.arch: 'vgg' unknown"),
    ("teacher.train.hflip=maybe", "teacher.train.hflip"),
    ("teacher=3", "teacher is a section"),
    ("data.size=30", "data.size: 30 is not one of"),
    ("seed=true", "seed: expected int"),
    ("nonsense", "write it as --set section.key=value"),
])
def test_bad_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cpu", overrides=[override])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("huge")


def test_yaml_file_roundtrip(tmp_path):
    c = load_config("tiny", overrides=["teacher.train.epochs=5", "seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(c.to_yaml())
    again = load_config("tiny", file=path)
    assert again == c


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("cpu", file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config("cpu", file=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("teacher:\n  trian: {}\n")
    with pytest.raises(ConfigError, match="unknown config key 'teacher.trian'"):
        load_config("cpu", file=unknown)


@pytest.mark.parametrize("override, message", [
    ("baselines=synthetic,fancy", "config baselines: unknown ['fancy']"),
    ("select.sigma=1.0,abc", "config select.sigma: '1.0,abc' is not a list of numbers"),
        ("select.sigma=[1.0, x]", "config select.sigma: [1.0, 'x'] is not a list of numbers"),
    ("select.sigma=0.5", "config select.sigma: values must be in [1.0, 10.0]"),
    ("select.threshold=1.5", "config select.threshold: values must be in [0.0, 0.99]"),
    ("distill.strategy=sometimes", "config distill.strategy: must be auto, every-epoch or pool"),
    ("distill.temperature=0", "config distill.temperature: must be > 0"),
    ("distill.alpha=2", "config distill.alpha: must be in [0, 1]"),
    ("distill.train.epochs=0", "config distill.train.epochs: must be ≥ 1"),
])
def test_distillation_settings_are_validated(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("cpu", overrides=[override])
    assert message in str(err.value)


def test_baselines_list_parses_and_may_be_empty():
    assert load_config("cpu").methods_to_run() == ("synthetic", "dpsgd")  # the ablations when asked
    assert load_config("tiny").methods_to_run() == ("synthetic", "regen", "soft", "dpsgd")
    assert load_config("cpu", overrides=["baselines=''"]).methods_to_run() == ()
    assert load_config("cpu", overrides=["baselines=soft, soft"]).methods_to_run() == ("soft",)


def test_dpsgd_config_validation():
    config = load_config("cpu", overrides=["dpsgd.epsilons=8, 1, 8"])
    assert config.dpsgd.epsilon_list() == (8.0, 1.0) and config.dpsgd.delta == 0
    for override, key in (("dpsgd.epsilons=0", "dpsgd.epsilons"), ("dpsgd.delta=1", "dpsgd.delta"),
                          ("dpsgd.accountant=gdp", "dpsgd.accountant"), ("dpsgd.max_grad_norm=0", "dpsgd.max_grad_norm"),
                          ("dpsgd.noise=fixed", "dpsgd.noise"), ("audit.canary_stress=1", "audit.canary_stress"),
                          ("audit.canary_copies=0", "audit.canary_copies")):
        with pytest.raises(ConfigError, match=key):
            load_config("cpu", overrides=[override])


def test_audit_config_validation():
    assert load_config("cpu").audit.references == 8
    assert load_config("cpu").dpsgd.noise == "secret" and load_config("tiny").dpsgd.noise == "seeded"
    with pytest.raises(ConfigError, match="audit.references"):
        load_config("cpu", overrides=["audit.references=6.5"])
    with pytest.raises(ConfigError, match="audit.bootstrap"):
        load_config("cpu", overrides=["audit.bootstrap=10"])
    config = load_config("cpu", overrides=["audit.targets=kr, real"])
    assert config.audit.target_methods(["real", "kr", "soft"]) == ("kr", "real")
    assert load_config("cpu").audit.target_methods(["real", "kr"]) == ("real", "kr")
    with pytest.raises(ConfigError, match="not in this run"):
        config.audit.target_methods(["real"])


def test_student_budget_in_images():
    distill = load_config("cpu").distill
    assert distill.max_kimg == 30 and distill.train.epochs == 40
    assert distill.epochs_for(1257) == 23 and distill.epochs_for(546) == 40 and distill.epochs_for(4708) == 6
    assert distill.epochs_for(10 ** 6) == 1  # never zero epochs
    assert load_config("paper").distill.epochs_for(4708) == 100  # no cap: paper-scale epochs
    with pytest.raises(ConfigError, match="distill.max_kimg"):
        load_config("cpu", overrides=["distill.max_kimg=-1"])


def test_grids_are_typed_tuples_written_any_of_three_ways(tmp_path):
    for form in ("select.sigma=1,2.5", "select.sigma=[1, 2.5]"):
        assert load_config("cpu", overrides=[form]).select.sigma == (1.0, 2.5)
    assert load_config("cpu", overrides=["select.threshold=0.3"]).select.threshold == (0.3,)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("select:\n  guidance: [1.5, 3]\ndpsgd:\n  epsilons: 2,4\n")
    config = load_config("cpu", yaml_file)
    assert config.select.guidance == (1.5, 3.0) and config.dpsgd.epsilon_list() == (2.0, 4.0)
    # the resolved config.yaml writes lists, and reads back to the same config
    saved = tmp_path / "saved.yaml"
    saved.write_text(config.to_yaml())
    assert "- 1.5" in saved.read_text() and load_config("cpu", saved) == config
