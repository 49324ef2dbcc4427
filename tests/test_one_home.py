"""One home per fact: the schema is the only place a default lives, and every schema key is
either a stage's key (dag.STAGE_KEYS) or declared as changing no stage's results."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import jsonschema
import pytest

from natv2.config import schema
from natv2.data import DataSettings
from natv2.pipeline.dag import NOT_STAGE_KEYS, STAGE_KEYS
from natv2.report import ReportSettings
from natv2.search.policy import Policy
from natv2.train.adapt import AdaptSettings
from natv2.train.eps import PhaseSettings, TrainSettings, WarmupSettings
from natv2.train.finetune import FinetuneSettings

PACKAGE = Path(__file__).resolve().parents[1] / "natv2"
SETTINGS = [DataSettings, PhaseSettings, TrainSettings, WarmupSettings, AdaptSettings,
            FinetuneSettings, ReportSettings]


def leaf_keys(node: dict, prefix: str = "") -> dict[str, dict]:
    """``{dotted key: its schema}`` of every key without sub-properties."""
    out = {}
    for name, sub in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        if "properties" in sub:
            out.update(leaf_keys(sub, key + "."))
        else:
            out[key] = sub
    return out


LEAVES = leaf_keys(schema())
# keys whose schema default is not null: a second default of theirs anywhere would be a duplicate
DEFAULTED: dict[str, list[dict]] = {}
for _key, _sub in LEAVES.items():
    if _sub.get("default") is not None:
        DEFAULTED.setdefault(_key.rsplit(".", 1)[-1], []).append(_sub)


def is_default_of(name: str, node: ast.AST) -> bool:
    """Whether literal ``node`` is a valid value of a defaulted schema key called ``name`` (a
    value of another type, e.g. a description string, is no default)."""
    if name not in DEFAULTED:
        return False
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return False
    if isinstance(value, tuple):
        value = list(value)
    return any(jsonschema.Draft202012Validator(sub).is_valid(value) for sub in DEFAULTED[name])


def covered(key: str, keys) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def test_every_schema_key_is_a_stage_key_or_declared_otherwise():
    stage_keys = {k for keys in STAGE_KEYS.values() for k in keys}
    missing = [k for k in LEAVES if not covered(k, stage_keys) and k not in NOT_STAGE_KEYS]
    assert not missing, f"add these schema keys to a stage in dag.STAGE_KEYS: {missing}"
    both = [k for k in NOT_STAGE_KEYS if covered(k, stage_keys)]
    assert not both, f"in STAGE_KEYS and NOT_STAGE_KEYS: {both}"


def test_stage_keys_exist_in_the_schema():
    known = set(LEAVES)
    for stage, keys in STAGE_KEYS.items():
        unknown = [k for k in keys if not any(leaf == k or leaf.startswith(k + ".") for leaf in known)]
        assert not unknown, f"{stage}: {unknown} not in the schema"
    assert set(NOT_STAGE_KEYS) <= known


@pytest.mark.parametrize("cls", SETTINGS + [Policy], ids=lambda c: c.__name__)
def test_settings_fields_carry_no_default(cls):
    defaulted = [f.name for f in dataclasses.fields(cls)
                 if f.name in DEFAULTED and (f.default is not dataclasses.MISSING
                                             or f.default_factory is not dataclasses.MISSING)]
    assert not defaulted, f"{cls.__name__}: defaults for {defaulted}; the schema holds them"


def test_settings_from_a_partial_config_take_the_schema_defaults():
    data = DataSettings.from_config({"data": {"calib_size": 7}})
    assert data.calib_size == 7 and data.batch_size == schema()["properties"]["data"][
        "properties"]["batch_size"]["default"]
    train = TrainSettings.from_config({})
    assert train.phases["full"] == PhaseSettings(120, 0.026, 0, 1)
    assert AdaptSettings.from_config({}).top_n == 150
    assert WarmupSettings.from_config({}).supernet.subnets_per_step == 4


def _module_dict_defaults(tree: ast.Module) -> list[tuple[int, list[str]]]:
    """Module-level ``NAME = {"key": constant, ...}`` literals whose keys are schema keys with a
    non-null default (a second home for those defaults)."""
    found = []
    for node in tree.body:
        value = getattr(node, "value", None)
        if not isinstance(node, ast.Assign | ast.AnnAssign) or not isinstance(value, ast.Dict):
            continue
        keys = [k.value for k, v in zip(value.keys, value.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
                and is_default_of(k.value, v)]
        if len(keys) >= 3:
            found.append((node.lineno, keys))
    return found


def _get_defaults(tree: ast.Module) -> list[tuple[int, str]]:
    """``x.get("schema key", non-None constant)`` calls: a default beside the schema's."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get" and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and is_default_of(node.args[0].value, node.args[1])):
            found.append((node.lineno, node.args[0].value))
    return found


def test_no_library_module_carries_its_own_default_for_a_schema_key():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(PACKAGE.parent)
        problems += [f"{rel}:{line}: dict of defaults for {keys}"
                     for line, keys in _module_dict_defaults(tree)]
        problems += [f"{rel}:{line}: .get({key!r}, default)" for line, key in _get_defaults(tree)]
    assert not problems, "\n".join(problems)


def test_the_checks_can_fail():
    """The scanners find the patterns they are meant to refuse."""
    bad = ast.parse('DEFAULTS = {"batch_size": 64, "lr": 0.01, "patience": 5}\n'
                    'x = cfg["data"].get("calib_size", 256)\n'
                    'WHY = {"device": "runs", "threads": "intra-op", "seed": "split"}\n'
                    'y = phase.get("name", "")\n')
    assert _module_dict_defaults(bad) == [(1, ["batch_size", "lr", "patience"])]
    assert _get_defaults(bad) == [(2, "calib_size")]

    @dataclasses.dataclass
    class Carries:
        lr: float = 0.1

    with pytest.raises(AssertionError, match="defaults for"):
        test_settings_fields_carry_no_default(Carries)
