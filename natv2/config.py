"""Load and validate a natv2 configuration.

The JSON schema (``natv2/schemas/config.schema.yaml``, linked from ``workflow/schemas/``) is the
single source of truth for keys, types, allowed values and defaults; the Snakefile validates the
same file. ``load_config`` returns a :class:`Config`, a plain nested ``dict`` with every default
filled in, so library code reads ``cfg["data"]["name"]`` and tests can pass plain dicts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import validators

from natv2.errors import UserError
from natv2.files import first_line
from natv2.targets import targets_from_config

DEFAULT_CONFIG_PATH = Path("config/config.yaml")


class ConfigError(UserError):
    """A configuration that cannot be used; the message is one line naming key and allowed values."""


def schema() -> dict:
    """The configuration schema as a dict (read from the package data)."""
    text = resources.files("natv2").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    """A validator class that fills ``default`` values while validating (jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from validate_properties(validator, properties, instance, subschema)

    return validators.extend(validator_class, {"properties": set_defaults})


_FillingValidator = _with_defaults(jsonschema.Draft202012Validator)


class Config(dict):
    """A validated configuration: a nested dict with defaults filled, plus where it came from."""

    path: Path | None = None

    def get_path(self, dotted: str, default: Any = None) -> Any:
        """``cfg.get_path("search.n_doe")`` -> the value, or ``default`` when a key is absent."""
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the offending key, its value and what would be valid."""
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        where = f"in '{key}'" if error.absolute_path else "at the top level"
        return f"unknown config key {', '.join(repr(u) for u in unknown)} {where}; allowed: {', '.join(allowed)}"
    if error.validator == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"config key '{key}': {error.instance!r} is not allowed; allowed: {allowed}"
    if error.validator == "oneOf":
        # the branch the value was meant for (e.g. {pretrained: NAME}) names the deeper problem
        deeper = [e for e in error.context or () if len(e.absolute_path) > len(error.absolute_path)]
        if deeper:
            return _describe(max(deeper, key=lambda e: len(e.absolute_path)))
        hint = error.schema.get("description", "see the schema")
        return f"config key '{key}': {error.instance!r} is not valid; allowed: {hint}"
    if error.validator == "contains":
        return f"config key '{key}': {error.instance!r} is not allowed; {error.schema.get('description', error.message)}"
    if error.validator == "type":
        return f"config key '{key}': {error.instance!r} has the wrong type; expected {error.validator_value}"
    return f"config key '{key}': {error.message}"


def validate(raw: Mapping[str, Any]) -> Config:
    """Validate ``raw`` against the schema, fill defaults, run cross-key checks; return a Config."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(raw).__name__}")
    data = copy.deepcopy(dict(raw))
    if isinstance(data.get("report"), Mapping) and "param_budgets" in data["report"]:
        budgets = data["report"]["param_budgets"]
        raise ConfigError(f"config key 'report.param_budgets' ({budgets!r}) was replaced by targets; "
                          "write e.g. targets: [{params: 1000000}, {params: 3000000}]")
    validator = _FillingValidator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError(_describe(errors[0]))
    _check_finite(data)
    cfg = Config(data)
    check_semantics(cfg)
    return cfg


# OFA's MobileNetV3 checkpoints were trained at 128..224 px; NAT searches 192..256. Outside this
# range the pretrained weights are not a meaningful starting point.
PRETRAINED_RESOLUTIONS = (128, 256)


def _check_finite(value: Any, key: str = "") -> None:
    """Every number of a config is finite (YAML reads ``.inf`` and ``.nan`` as floats that pass
    ``minimum``-style bounds); ConfigError naming the first that is not."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}': {value} is not a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}.{i}")


def ensure_config(cfg: Mapping[str, Any]) -> Config:
    """``cfg`` itself when it is a validated :class:`Config`, else ``validate(cfg)``: what every
    ``Settings.from_config`` starts with, so a plain (partial) dict gets the schema's defaults."""
    return cfg if isinstance(cfg, Config) else validate(cfg)


def check_semantics(cfg: Config) -> None:
    """Checks that involve several keys (the schema checks each key alone); ConfigError if any fails."""
    search, finetune, source = cfg["search"], cfg["finetune"], cfg["supernet"]["source"]
    if finetune["slots"] > search["n_doe"]:
        raise ConfigError(f"config key 'finetune.slots': {finetune['slots']} is more than search.n_doe "
                          f"({search['n_doe']}); allowed: 1..{search['n_doe']}")
    targets = targets_from_config(cfg)
    if len(targets) > finetune["slots"]:
        raise ConfigError(f"config key 'finetune.slots': {finetune['slots']} leaves no slot for some of the "
                          f"{len(targets)} targets; allowed: {len(targets)}..{search['n_doe']} (one slot per target)")
    sources = source if isinstance(source, list) else [source]  # a list: one per width
    for i, one in enumerate(sources):
        key = f"supernet.source[{i}]" if isinstance(source, list) else "supernet.source"
        if isinstance(one, Mapping) and "pretrained" in one:
            lo, hi = PRETRAINED_RESOLUTIONS
            bad = [r for r in cfg["space"]["resolutions"] if not lo <= r <= hi]
            if bad:
                raise ConfigError(f"config key 'space.resolutions': {bad} outside the pretrained super-network's "
                                  f"range; allowed: {lo}..{hi} px")
        if isinstance(one, Mapping) and "file" in one and not Path(one["file"]).expanduser().is_file():
            raise ConfigError(f"config key '{key}.file': '{one['file']}' does not exist; "
                              "allowed: the path of a checkpoint file")
    widths = cfg["supernet"]["width_mult"]
    n_widths = len(widths) if isinstance(widths, list) else 1
    if n_widths > 1 and "latency" in search["objectives"] and cfg["latency"]["table"]:
        raise ConfigError(f"config key 'latency.table': the latency lookup table holds one width's pieces, "
                          f"supernet.width_mult is {widths}; allowed: latency.table false (measured "
                          f"latency) or one width")
    if isinstance(source, list) and len(source) != n_widths:
        raise ConfigError(f"config key 'supernet.source': {len(source)} sources for the {n_widths} widths "
                          f"{widths}; allowed: train, one checkpoint of all widths or one source per width")



def load_config(path: str | Path | Sequence[str | Path] = DEFAULT_CONFIG_PATH,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read YAML config file(s) with ``yaml.safe_load``, merge them in order (later files win, as
    Snakemake's ``--configfile``), merge ``overrides``, validate and fill defaults."""
    paths = [Path(p) for p in ([path] if isinstance(path, str | Path) else path)]
    if not paths:
        raise ConfigError("no config file given; pass --config PATH to a YAML file")
    raw: dict[str, Any] = {}
    for one in paths:
        raw = merge(raw, read_yaml(one))
    if overrides:
        raw = merge(raw, overrides)
    cfg = validate(raw)
    cfg.path = paths[-1]
    return cfg


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``: a few bytes can expand into
    gigabytes) and duplicate keys (YAML keeps the last one silently)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: alias '*{event.anchor}' refused "
                                 "(write the value out; config files take no anchors or aliases)")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                                     "(each key once per mapping)")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """One config file as a dict (``yaml.safe_load`` without aliases or duplicate keys); a
    missing, non-UTF-8 or malformed file is a ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a directory; pass --config PATH to a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass --config PATH to an existing YAML file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader) or {}  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text: byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {first_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values, not a {type(raw).__name__}")
    return raw


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """Recursive dict merge: values of ``override`` win; neither input is modified."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
