import pytest

from neurodyn.config import LfadsConfig, closest_key, load_config, validate_config
from neurodyn.errors import NeurodynError


def test_config_with_only_run_name_gets_every_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_name: r1\n")
    config = load_config(path)
    assert config.run_name == "r1"
    assert config.model_dump() == {**LfadsConfig().model_dump(), "run_name": "r1"}


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_name: r1\nlearning_rate_int: 0.01\n")
    with pytest.raises(NeurodynError, match=r"unknown key 'learning_rate_int'.*did you mean 'learning_rate_init'"):
        load_config(path)


def test_unknown_key_far_from_everything_has_no_suggestion():
    with pytest.raises(NeurodynError) as info:
        validate_config({"zzzzzzzz": 1})
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("key, value", [("keep_prob", 1.5), ("batch_size", 0), ("observation", "laplace"),
                                        ("device", "tpu"), ("gen_dim", "big")])
def test_invalid_values_name_the_key(key, value):
    with pytest.raises(NeurodynError, match=f"key '{key}'"):
        validate_config({key: value}, source="my.yaml")


def test_yaml_syntax_error_and_missing_file_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(NeurodynError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(NeurodynError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_closest_key():
    assert closest_key("kl_ic_wieght", list(LfadsConfig.model_fields)) == "kl_ic_weight"
