"""Load, merge and validate experiment configuration files.

The schema (``xaipipe/schema/config.schema.yaml``) is the single source of truth: the
Snakefile validates with ``snakemake.utils.validate`` against the same file, and every
workflow script calls :func:`load_config`, so both fill in the same defaults and reject the
same mistakes before any work starts.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

from xaipipe.errors import ConfigError
from xaipipe.pretrained import check_pretrained
from xaipipe.registry import check_names

SCHEMA_PATH = Path(str(resources.files("xaipipe") / "schema" / "config.schema.yaml"))


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def deep_merge(base: Mapping, overlay: Mapping) -> dict:
    """Merge ``overlay`` into a copy of ``base`` the way Snakemake merges ``--configfile``s:
    mappings merge key by key, everything else (lists included) is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _with_defaults(validator_class):
    """Extend a jsonschema validator so that ``default`` values are filled in while
    validating (the recipe from the jsonschema FAQ; Snakemake's validate does the same)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place (filling defaults) and return it.

    Raises :class:`ConfigError` listing every problem with its key path, e.g.
    ``roar.fractions.1: 1.5 is greater than or equal to the maximum of 1``.
    """
    validator = _DefaultFillingValidator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {_key_path(e)}: {e.message}" for e in errors]
        raise ConfigError(
            f"invalid configuration in {source}:\n" + "\n".join(lines)
            + f"\n(schema: {SCHEMA_PATH})"
        )
    _check_cross_field(config, source)
    problems = check_names(config)
    if problems:
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(problems))
    check_pretrained(config)
    return config


def _check_cross_field(config: dict, source: str) -> None:
    syn = config["synthetic"]
    if syn["min_objects"] > syn["max_objects"]:
        raise ConfigError(
            f"invalid configuration in {source}:\n  synthetic.min_objects: "
            f"{syn['min_objects']} is larger than synthetic.max_objects ({syn['max_objects']})"
        )


def load_config(paths: str | Path | Iterable[str | Path]) -> dict:
    """Read one or more YAML files, merge them in order (later wins) and validate."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    merged: dict[str, Any] = {}
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        merged = deep_merge(merged, data)
    return validate_config(merged, source=" + ".join(str(p) for p in paths))


def train_settings(config: Mapping, variant: str, *, epochs: int | None = None) -> dict:
    """The ``train`` section with ``train_overrides[variant]`` merged on top; ``epochs``, when
    not None, replaces the epoch count (``roar.epochs``, ``sanity.data_randomisation_epochs``)."""
    settings = deep_merge(config["train"], config["train_overrides"].get(variant, {}))
    if epochs is not None:
        settings["epochs"] = epochs
    return settings


def validation_variants(config: Mapping) -> list[str]:
    """Variants whose models the oracle maps validate the metrics on: those of
    ``metric_validation.variants`` that are trained (``xaipipe.pipeline.check_grid`` rejects
    the others before a run starts)."""
    return [v for v in config["metric_validation"]["variants"] if v in config["variants"]]
