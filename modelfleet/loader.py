"""Reading specs from disk, and turning every kind of bad input into one clear line per problem.

A problem reads `models/fraud.yaml:7 slo.p99_ms: must be > 0, got -5`: the file, the line where it can be
found, the field path, what was expected and what was found. Nothing here raises anything but `SpecError`.
"""

from __future__ import annotations

import difflib
import re
import ipaddress
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from modelfleet.catalogue import hardware, regions
from modelfleet.spec import BUCKET_URI, DNS_LABEL, LABEL, LABEL_VALUE, TENSOR_NAME, ModelSpec, StackSpec
from modelfleet.tuning.record import TuningRecord

CONFIG_NAMESPACE = "modelfleet"

_PATTERN_MEANING = {
    DNS_LABEL: "a DNS label (lowercase letters, digits and '-', starting with a letter)",
    TENSOR_NAME: "a tensor name (letters, digits and '_', not starting with a digit)",
    LABEL: "a tag key valid on AWS and GCP (lowercase letters, digits, '-' and '_', starting with a letter)",
    LABEL_VALUE: "a tag value valid on AWS and GCP (lowercase letters, digits, '-' and '_', at most 63)",
    BUCKET_URI.format(scheme="s3"): "an S3 URI such as s3://bucket/prefix",
    BUCKET_URI.format(scheme="gs"): "a Cloud Storage URI such as gs://bucket/prefix",
}


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class SpecError(Exception):
    """One or more problems in the specs; `str()` is the report a person reads."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Loaded:
    """A parsed YAML document and the line of every mapping key and list item in it."""

    data: Any
    lines: dict[tuple, int]

    def line_of(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def read_yaml(path: Path, display: str) -> Loaded:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([Problem(display, None, "", f"cannot read file: {exc.strerror}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem(display, mark.line + 1 if mark else None, "", f"invalid YAML: {reason}")]) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return Loaded(data, lines)


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            lines[child] = key.start_mark.line + 1
            _index_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            _index_lines(value, path + (index,), lines)


def _expect_mapping(loaded: Loaded, display: str, what: str) -> dict:
    if loaded.data is None:
        raise SpecError([Problem(display, None, "", f"file is empty; expected a mapping describing {what}")])
    if not isinstance(loaded.data, dict):
        kind = _kind(loaded.data)
        raise SpecError([Problem(display, 1, "", f"expected a mapping describing {what} at the top level, got {kind}")])
    return loaded.data


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _dotted(loc: Iterable) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class found by following `loc` from `model`, skipping list indexes and dict keys."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        if isinstance(part, int) or part not in current.model_fields:
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The model class inside Optional[...], list[...], dict[..., ...] or Annotated[...], if any."""
    origin = typing.get_origin(annotation)
    if origin is None:
        return annotation
    for arg in typing.get_args(annotation):
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation if origin not in (list, dict, typing.Union, types.UnionType, typing.Annotated) else None


def _message(error: dict, root: type[BaseModel]) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    got_text = f"got {got!r}" if not isinstance(got, (dict, list)) else f"got {_kind(got)}"
    if kind == "extra_forbidden":
        parent = _model_at(root, tuple(p for p in error["loc"][:-1] if not isinstance(p, int)))
        known = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; known keys: {', '.join(known)}" if known else "")
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit:g}, {got_text}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, {got_text}"
    if kind == "string_pattern_mismatch":
        return f"must be {_PATTERN_MEANING.get(ctx.get('pattern'), 'of the form ' + str(ctx.get('pattern')))}, {got_text}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, {got_text}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, {got_text}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, {got_text}"
    if kind in ("string_type",):
        return f"expected a string, {got_text}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, {got_text}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, {got_text}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s), {got_text}"
    if kind in ("ip_v4_network", "ip_any_network"):
        return f"expected an IPv4 CIDR such as 10.20.0.0/16, {got_text}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"][0].lower() + error["msg"][1:]


# A whole-model validator names the field it is about by starting its message with `field.path: `.
_FIELD_PREFIX = re.compile(r"^((?:[a-z_]+)(?:\.[a-z_]+|\[\d+\])*): (.+)$", re.S)


def _field_path(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[a-z_]+|\d+", text))


def problems_from(exc: ValidationError, root: type[BaseModel], display: str, loaded: Loaded | None,
                  where: Callable[[tuple], tuple] = lambda loc: loc,
                  name: Callable[[tuple], str] = _dotted) -> list[Problem]:
    """One problem per pydantic error. `where` maps a field path to its place in the YAML document (the stack
    file nests its keys under `config:` and the namespace); `name` gives the path as the user reads it."""
    out = []
    for error in exc.errors():
        # pydantic appends the union member or validator name to loc in some cases; keep only data keys.
        loc = tuple(p for p in error["loc"] if isinstance(p, int) or not str(p).startswith("function-"))
        message = _message(error, root)
        named = _FIELD_PREFIX.match(message) if error["type"] == "value_error" else None
        if named:
            loc, message = loc + _field_path(named.group(1)), named.group(2)
        line = loaded.line_of(where(loc)) if loaded else None
        out.append(Problem(display, line, name(loc), message))
    return out


def load_model(path: Path, display: str | None = None) -> ModelSpec:
    display = display or str(path)
    loaded = read_yaml(path, display)
    data = _expect_mapping(loaded, display, "one model (name, owner, source, backend, inputs, outputs, slo)")
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from(exc, ModelSpec, display, loaded)) from None
    if path.stem != spec.name:
        raise SpecError([Problem(display, loaded.line_of(("name",)), "name",
                                 f"must match the file name: rename the file to {spec.name}.yaml or set name: {path.stem}")])
    return spec


def stack_file(root: Path, stack: str) -> Path:
    return root / "stacks" / f"Pulumi.{stack}.yaml"


def stack_config_from_file(path: Path, display: str) -> tuple[dict, Loaded]:
    """The `modelfleet:` keys of a Pulumi stack file, without their namespace, and the file's line index."""
    loaded = read_yaml(path, display)
    top = _expect_mapping(loaded, display, "a Pulumi stack (a `config:` mapping)")
    config = top.get("config")
    if not isinstance(config, dict):
        raise SpecError([Problem(display, loaded.line_of(("config",)), "config",
                                 f"expected a mapping of {CONFIG_NAMESPACE}:<key> settings, got {_kind(config)}")])
    values = {k.split(":", 1)[1]: v for k, v in config.items() if str(k).startswith(CONFIG_NAMESPACE + ":")}
    return values, loaded


def stack_config_from_pulumi(config_map: dict[str, Any]) -> dict:
    """The `modelfleet:` keys from the engine's config map, as Pulumi hands them to a running program."""
    values = {}
    for key, raw in config_map.items():
        if not key.startswith(CONFIG_NAMESPACE + ":"):
            continue
        try:
            values[key.split(":", 1)[1]] = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            values[key.split(":", 1)[1]] = raw  # plain strings arrive unquoted
    return values


def parse_stack(values: dict, display: str, loaded: Loaded | None) -> StackSpec:
    try:
        return StackSpec.model_validate(values)
    except ValidationError as exc:
        # Field paths are reported with the namespace, as the file spells them, and found under `config:`.
        raise SpecError(problems_from(exc, StackSpec, display, loaded,
                                      where=lambda loc: ("config",) + _config_path(loc), name=_config_key)) from None


def _config_path(loc: tuple) -> tuple:
    return (f"{CONFIG_NAMESPACE}:{loc[0]}",) + tuple(loc[1:]) if loc else ()


def _config_key(loc: tuple) -> str:
    return f"{CONFIG_NAMESPACE}:{_dotted(loc)}" if loc else ""


@dataclass(frozen=True)
class Fleet:
    """A validated stack and the models it runs, in the stack's order."""

    stack_name: str
    stack: StackSpec
    models: tuple[ModelSpec, ...]
    # Tuning records (models/<model>.tuning/<hardware-class>.yaml), keyed (model, hardware class).
    tuning: dict[tuple[str, str], TuningRecord] = field(default_factory=dict)


def load_models(root: Path) -> tuple[dict[str, ModelSpec], dict[str, str], list[Problem]]:
    """Every model under `models/`, keyed by name, with the file each came from, and the problems found."""
    specs: dict[str, ModelSpec] = {}
    files: dict[str, str] = {}
    problems: list[Problem] = []
    for path in sorted([*(root / "models").glob("*.yaml"), *(root / "models").glob("*.yml")]):
        display = str(path.relative_to(root))
        try:
            spec = load_model(path, display)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        if spec.name in specs:
            line = read_yaml(path, display).line_of(("name",))
            problems.append(Problem(display, line, "name", f"model {spec.name!r} is already defined in {files[spec.name]}"))
            continue
        specs[spec.name] = spec
        files[spec.name] = display
    return specs, files, problems


def load_fleet(root: Path, stack_name: str, config_map: dict[str, Any] | None = None) -> Fleet:
    """Load and cross-check a stack and its models. `config_map` is the engine's config under `pulumi up`;
    without it the stack file is read from disk."""
    path = stack_file(root, stack_name)
    display = str(path.relative_to(root))
    loaded = None
    if config_map is None:
        if not path.exists():
            known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (root / "stacks").glob("Pulumi.*.yaml"))
            raise SpecError([Problem(display, None, "", f"no such stack {stack_name!r}; known stacks: {', '.join(known)}")])
        values, loaded = stack_config_from_file(path, display)
    else:
        values = stack_config_from_pulumi(config_map)
        if path.exists():
            loaded = read_yaml(path, display)
    stack = parse_stack(values, display, loaded)
    specs, files, problems = load_models(root)
    broken = {Path(p.file).stem for p in problems}  # their own problems are already reported
    def model_line(name: str, path: tuple) -> int | None:  # only problems need it: read the file again then
        return read_yaml(root / files[name], files[name]).line_of(path)

    problems.extend(_cross_check(stack, specs, files, display, loaded, broken, model_line))
    records, record_problems = load_tuning_records(root, [n for n in stack.models if n in specs])
    problems.extend(record_problems)
    if problems:
        raise SpecError(problems)
    return Fleet(stack_name, stack, tuple(specs[name] for name in stack.models), records)


def load_tuning_records(root: Path, models: Iterable[str]) -> tuple[dict[tuple[str, str], TuningRecord], list[Problem]]:
    """Every tuning record of `models`, keyed (model, hardware class), and the problems found reading them."""
    records: dict[tuple[str, str], TuningRecord] = {}
    problems: list[Problem] = []
    for name in models:
        for path in sorted((root / "models" / f"{name}.tuning").glob("*.yaml")):
            display = str(path.relative_to(root))
            loaded = read_yaml(path, display)
            try:
                record = TuningRecord.model_validate(loaded.data)
            except ValidationError as exc:
                problems.extend(problems_from(exc, TuningRecord, display, loaded))
                continue
            if record.model != name or record.hardware_class != path.stem:
                problems.append(Problem(display, loaded.line_of(("model",)), "model",
                                        f"this file holds the record of {record.model} on {record.hardware_class}; "
                                        f"it must be models/{record.model}.tuning/{record.hardware_class}.yaml"))
                continue
            records[(name, path.stem)] = record
    return records, problems


def _cross_check(stack: StackSpec, specs: dict[str, ModelSpec], files: dict[str, str], display: str,
                 loaded: Loaded | None, broken: set[str], model_line: Callable[[str, tuple], int | None]
                 ) -> list[Problem]:
    def line(*path: Any) -> int | None:
        return loaded.line_of(("config",) + _config_path(path)) if loaded else None

    problems = []
    for index, name in enumerate(stack.models):
        if name not in specs and name not in broken:
            close = difflib.get_close_matches(name, sorted(specs), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known models: {', '.join(sorted(specs)) or 'none'}"
            problems.append(Problem(display, line("models", index), f"{CONFIG_NAMESPACE}:models[{index}]",
                                    f"unknown model {name!r} (no models/{name}.yaml); {hint}"))
    seen = [n for n in stack.models]
    for name in sorted({n for n in seen if seen.count(n) > 1}):
        problems.append(Problem(display, line("models"), f"{CONFIG_NAMESPACE}:models", f"model {name!r} listed twice"))

    for index, entry in enumerate(stack.regions):
        for name in stack.models:
            spec = specs.get(name)
            if spec is None:
                continue
            offering = hardware().classes[spec.hardware.gpu_class].on(entry.cloud)
            if offering is not None and spec.hardware.gpus_per_replica > offering.gpus_per_node:
                problems.append(Problem(
                    files[name], model_line(name, ("hardware", "gpus_per_replica")), "hardware.gpus_per_replica",
                    f"{spec.hardware.gpus_per_replica} GPUs per replica do not fit one {offering.instance_type} "
                    f"({offering.gpus_per_node} GPU per node on {entry.cloud}); lower it or pick a larger gpu_class"))
            if offering is None or entry.name not in offering.regions:
                where = ", ".join(offering.regions) if offering else f"nowhere on {entry.cloud}"
                problems.append(Problem(
                    display, line("regions", index), f"{CONFIG_NAMESPACE}:regions[{index}]",
                    f"{spec.hardware.gpu_class} (model {name}, {files[name]}) is not offered in {entry.region}; "
                    f"offered in: {where}. Pick another region or hardware.gpu_class"))

    for name in stack.models:
        spec = specs.get(name)
        clouds = {"local"} if stack.environment == "local" else {r.cloud for r in stack.regions}
        for cloud in sorted(clouds) if spec else ():
            if spec.source.on(cloud) is None:
                example = {"aws": "s3://bucket/prefix", "gcp": "gs://bucket/prefix", "local": "a local path"}[cloud]
                problems.append(Problem(files[name], model_line(name, ("source",)), f"source.{cloud}",
                                        f"stack {display} runs this model on {cloud}; add source.{cloud}: {example}"))

    for name in stack.models:
        spec = specs.get(name)
        if spec and "jwt" in spec.gateway.auth and stack.gateway.jwt is None:
            problems.append(Problem(files[name], model_line(name, ("gateway", "auth")), "gateway.auth",
                                    f"jwt needs an issuer, and stack {display} has none: add "
                                    f"{CONFIG_NAMESPACE}:gateway: {{jwt: {{issuer: ..., audiences: [...]}}}} there, "
                                    "or use api-key"))

    networks = region_networks(stack)
    keys = list(networks)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if networks[a].overlaps(networks[b]):
                index = next(n for n, r in enumerate(stack.regions) if r.region == b)
                problems.append(Problem(display, line("regions", index, "cidr"), f"{CONFIG_NAMESPACE}:regions[{index}].cidr",
                                        f"{networks[b]} overlaps {networks[a]} of {a}; give each region its own range"))
    return problems


def region_networks(stack: StackSpec) -> dict[str, ipaddress.IPv4Network]:
    """Each region's VPC range: the stack's override, else 10.<network_index>.0.0/16 from the region catalogue."""
    return {
        entry.region: entry.cidr or ipaddress.IPv4Network(f"10.{regions()[entry.cloud][entry.name].network_index}.0.0/16")
        for entry in stack.regions
    }
