"""Config loading: schema validation, defaults, one-line errors from the CLI."""

import pytest
import yaml

from natv2.cli import main
from natv2.config import ConfigError, load_config, merge, validate


def test_defaults_filled_from_schema():
    cfg = validate({})
    assert cfg["seed"] == 0
    assert cfg["data"]["name"] == "digits"
    assert cfg["supernet"]["ks_list"] == [3, 5, 7]
    assert cfg.get_path("data.calib_size") == 256
    assert cfg.get_path("data.nope", "x") == "x"


def test_shipped_default_config_validates():
    cfg = load_config("config/config.yaml")
    assert cfg["data"]["name"] == "digits"
    assert cfg.path.name == "config.yaml"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"bogus": 1}, "unknown config key 'bogus' at the top level; allowed:"),
        ({"data": {"nme": "digits"}}, "unknown config key 'nme' in 'data'; allowed:"),
        ({"data": {"name": "mnist"}}, "config key 'data.name': 'mnist' is not allowed; allowed: digits"),
        ({"seed": -1}, "config key 'seed': -1 is less than the minimum of 0"),
        ({"data": {"batch_size": "a"}}, "config key 'data.batch_size': 'a' has the wrong type"),
        ({"supernet": {"family": "XL"}}, "'supernet.family': 'XL' is not allowed; allowed: SE_B"),
        ({"supernet": {"source": {"url": "ftp://x"}}}, "config key 'supernet.source.url': 'ftp://x'"),
        ({"supernet": {"source": {"pretrained": "x"}}}, "allowed: ofa_mbv3_d234_e346_k357_w1.0"),
        ({"supernet": {"source": 7}}, "config key 'supernet.source': 7 is not valid; allowed: train"),
        ({"supernet": {"depth_list": [2, 3]}}, "must contain 4"),
        ({"device": "gpu"}, "config key 'device'"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(raw, expected):
    with pytest.raises(ConfigError) as info:
        validate(raw)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_cli_bad_config_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "imagenet"}}))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "data.name" in err and "imagenet" in err


def test_cli_missing_and_malformed_files(tmp_path, capsys):
    assert main(["check-config", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "broken.yaml"
    bad.write_text("data: [unclosed\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_merge_is_recursive_and_pure():
    base = {"data": {"name": "digits", "batch_size": 8}}
    out = merge(base, {"data": {"batch_size": 16}})
    assert out == {"data": {"name": "digits", "batch_size": 16}}
    assert base["data"]["batch_size"] == 8
