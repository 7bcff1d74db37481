"""load_config: defaults, YAML + overrides, and a ConfigError naming the full key for every bad value."""

from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from specray.config import JobConfig, ConfigError, config_to_yaml, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def load(*overrides: str, path: str | None = None) -> JobConfig:
    return load_config(path, list(overrides))


def fails(*overrides: str, key: str, expected: str = "", path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(*overrides, path=path)
    message = str(info.value)
    assert key in message and expected in message, message
    return message


def test_defaults_generate_run_id_and_output_dir():
    cfg = load()
    assert cfg.models.target == "embedded" and cfg.models.draft == "embedded-draft"
    assert cfg.generation.max_new_tokens == 64 and cfg.generation.temperature == 0.0
    assert cfg.data.path is None and cfg.policy.per_domain.code.k_max is None
    assert cfg.run_id and cfg.output.dir == f"runs/{cfg.run_id}"
    assert load("run_id=resume-me").output.dir == "runs/resume-me"


def test_overrides_beat_the_yaml_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("generation: {max_new_tokens: 32, batch_size: 4}\npolicy:\n  per_domain:\n    code: {k_max: 12}\n")
    cfg = load("generation.batch_size=2", 'generation.stop=[END,"\\n\\n"]', path=str(path))
    assert (cfg.generation.max_new_tokens, cfg.generation.batch_size) == (32, 2)
    assert cfg.generation.stop == ["END", "\n\n"] and cfg.policy.per_domain.code.k_max == 12


def test_default_yaml_matches_the_dataclass_defaults():
    from_yaml, built_in = load("run_id=x", path=str(CONFIGS / "default.yaml")), load("run_id=x")
    assert from_yaml == built_in


def test_default_yaml_lists_every_key():
    def keys(tree, prefix=""):
        return {k for name, value in tree.items()
                for k in (keys(value, f"{prefix}{name}.") if isinstance(value, dict) else {f"{prefix}{name}"})}

    listed = keys(OmegaConf.to_container(OmegaConf.load(CONFIGS / "default.yaml")))
    assert keys(OmegaConf.to_container(OmegaConf.structured(JobConfig))) - listed == set()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load(path=str(path))
    assert cfg.models.target and cfg.models.draft


def test_yaml_round_trip(tmp_path):
    cfg = load("run_id=r1", "policy.default=static:4", "policy.per_domain.math.threshold=0.3", "generation.stop=[x]")
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load(path=str(path)) == cfg


@pytest.mark.parametrize(
    "override, key",
    [
        ("nope=1", "nope"),
        ("generation.beam_width=2", "generation.beam_width"),
        ("policy.per_domain.code.budget=3", "policy.per_domain.code.budget"),
    ],
)
def test_unknown_keys(override, key):
    fails(override, key=key, expected="unknown key")


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("cluster:\n  num_gpus: 2\n")
    fails(path=str(path), key="cluster.num_gpus", expected="unknown key")


def test_unknown_domain_under_per_domain():
    fails("policy.per_domain.poetry.k_max=3", key="policy.per_domain.poetry", expected="code, math, logic, chat")


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("generation.max_new_tokens=lots", "generation.max_new_tokens", "Integer"),
        ("cluster.num_workers=1.5", "cluster.num_workers", "Integer"),
        ("generation.temperature=hot", "generation.temperature", "Float"),
        ("models.trust_remote_code=maybe", "models.trust_remote_code", "bool"),
        ("models.dtype=int8", "models.dtype", "float32"),
        ("models.device=tpu", "models.device", "cuda"),
        ("data.truncate=right", "data.truncate", "left"),
        ("generation.stop=END", "generation.stop", "list"),
        ("policy.per_domain.code.k_max=many", "policy.per_domain.code.k_max", "Integer"),
        ("label.depth=deep", "label.depth", "Integer"),
    ],
)
def test_wrong_types(override, key, expected):
    fails(override, key=key, expected=expected)


@pytest.mark.parametrize(
    "override, key",
    [
        ("generation.max_new_tokens=0", "generation.max_new_tokens"),
        ("generation.batch_size=0", "generation.batch_size"),
        ("generation.batch_size=-4", "generation.batch_size"),
        ("generation.top_k=-1", "generation.top_k"),
        ("generation.seed=-1", "generation.seed"),
        ("data.limit=0", "data.limit"),
        ("cluster.num_workers=0", "cluster.num_workers"),
        ("cluster.gpus_per_worker=-1", "cluster.gpus_per_worker"),
        ("cluster.max_in_flight=0", "cluster.max_in_flight"),
        ("cluster.batch_timeout_s=0", "cluster.batch_timeout_s"),
        ("cluster.max_retries=-1", "cluster.max_retries"),
        ("output.rows_per_file=0", "output.rows_per_file"),
        ("label.depth=0", "label.depth"),
    ],
)
def test_sizes_must_be_positive(override, key):
    fails(override, key=key, expected="expected")


@pytest.mark.parametrize("domain", ["code", "math", "logic", "chat"])
def test_k_max_at_least_one(domain):
    fails(f"policy.per_domain.{domain}.k_max=0", key=f"policy.per_domain.{domain}.k_max", expected="an integer in [1, 1024]")


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_threshold_in_unit_interval(value):
    fails(f"policy.per_domain.chat.threshold={value}", key="policy.per_domain.chat.threshold", expected="[0, 1]")


@pytest.mark.parametrize("value", ["0", "-0.5", "1.01"])
def test_top_p_in_unit_interval(value):
    fails(f"generation.top_p={value}", key="generation.top_p", expected="(0, 1]")


def test_temperature_not_negative():
    fails("generation.temperature=-0.1", key="generation.temperature", expected=">= 0")


@pytest.mark.parametrize("spec", ["static:-1", "static:0", "static:x", "beam", "disco:high", "confidence:1.5"])
def test_policy_specs(spec):
    fails(f"policy.default={spec}", key="policy.default")
    fails(f"policy.per_domain.math.name={spec}", key="policy.per_domain.math.name")


def test_valid_policy_specs():
    cfg = load(
        "policy.default=static:4", "policy.per_domain.code.name=confidence:0.4", "policy.per_domain.chat.name=disco"
    )
    assert cfg.policy.default == "static:4" and cfg.policy.per_domain.code.name == "confidence:0.4"


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails(f"output.dir={blocker / 'out'}", key="output.dir", expected="writable")


def test_output_dir_that_can_be_created(tmp_path):
    assert load(f"output.dir={tmp_path / 'new' / 'deeper'}").output.dir == str(tmp_path / "new" / "deeper")


def test_missing_data_path_and_bad_run_id(tmp_path):
    message = fails(f"data.path={tmp_path / 'absent.parquet'}", "run_id=../escape", key="data.path")
    assert "run_id" in message  # every problem is reported at once


def test_registry_must_be_a_directory(tmp_path):
    (tmp_path / "reg").write_text("")
    fails(f"policy.registry={tmp_path / 'reg'}", key="policy.registry", expected="directory")


def test_malformed_inputs(tmp_path):
    fails("generation.max_new_tokens", key="generation.max_new_tokens", expected="key=value")
    fails(path=str(tmp_path / "absent.yaml"), key="absent.yaml", expected="no such file")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    fails(path=str(tmp_path / "list.yaml"), key="list.yaml", expected="mapping")


def test_allowed_interpolations(monkeypatch):
    monkeypatch.setenv("SPECRAY_MAX_NEW", "16")
    monkeypatch.setenv("SPECRAY_TARGET", "${oc.env:HOME}")
    cfg = load(
        "generation.max_new_tokens=${oc.env:SPECRAY_MAX_NEW}",
        "models.target=${oc.env:SPECRAY_TARGET}",
        "models.draft=${models.target}-draft",
        "policy.registry=${oc.env:SPECRAY_UNSET,null}",
    )
    assert cfg.generation.max_new_tokens == 16
    assert cfg.models.target == "${oc.env:HOME}"  # an env value is data, never resolved again
    assert cfg.models.draft == "${oc.env:HOME}-draft" and cfg.policy.registry is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("${oc.env:HOME}", "'HOME' is not allowed"),
        ("${oc.env:SPECRAY_X,${oc.env:PATH}}", "'PATH' is not allowed"),
        ("${oc.env:${models.draft}}", "is not allowed"),
        ("${oc.decode:'[1]'}", "resolver 'oc.decode'"),
        ("${oc.create:{a:1}}", "resolver 'oc.create'"),
        ("${oc.select:models.draft}", "resolver 'oc.select'"),
        ("${oc.coerce:os.system,x}", "resolver 'oc.coerce'"),
        ("${unclosed", "malformed interpolation"),
    ],
)
def test_forbidden_interpolations(value, expected):
    fails(f"models.target={value}", key="models.target", expected=expected)


def test_forbidden_interpolation_in_yaml_list(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("generation:\n  stop: ['ok', '${oc.env:HOME}']\n")
    fails(path=str(path), key="generation.stop[1]", expected="not allowed")


def test_custom_resolvers_are_refused_even_when_registered():
    OmegaConf.register_resolver("specray_test_eval", lambda expr: eval(expr))  # noqa: S307
    try:
        fails("models.target=${specray_test_eval:1+1}", key="models.target", expected="resolver 'specray_test_eval'")
    finally:
        OmegaConf.clear_resolver("specray_test_eval")


def test_config_is_a_plain_dataclass():
    cfg = load("run_id=r")
    assert replace(cfg, run_id="s").run_id == "s"
