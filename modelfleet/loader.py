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
from modelfleet.spec import (BUCKET_URI, DNS_LABEL, DNS_NAME, GCP_PROJECT_ID, HEALTH_PATH, HTTPS_URL, IAM_ROLE_ARN,
                             IMAGE_DIGEST, KUBERNETES_MINOR, LABEL, LABEL_VALUE, MODEL_NAME, REGION_KEY, SCOPE,
                             STACK_REF, TENSOR_NAME, ModelSpec, StackSpec)
from modelfleet.tuning.record import TuningRecord

CONFIG_NAMESPACE = "modelfleet"

_PATTERN_MEANING = {
    DNS_LABEL: "a DNS label (lowercase letters, digits and '-', starting with a letter, not ending with '-')",
    LABEL: "a tag key valid on AWS and GCP (1 to 63 lowercase letters, digits, '-' and '_', starting with a letter)",
    LABEL_VALUE: "a tag value valid on AWS and GCP (1 to 63 lowercase letters, digits, '-' and '_')",
    DNS_NAME: "a DNS name (dot-separated labels of lowercase letters, digits and '-', ending in a top-level "
              "domain such as .com)",
    GCP_PROJECT_ID: "a Google Cloud project id (6 to 30 lowercase letters, digits and '-', starting with a letter, "
                    "not ending with '-')",
    KUBERNETES_MINOR: "a Kubernetes minor version written as text, such as '1.33'",
    TENSOR_NAME: "a tensor name without spaces",
    MODEL_NAME: "a Triton model name (letters, digits, '_', '-' and '.', not starting with '.' or '-')",
    BUCKET_URI.format(scheme="s3"): "an S3 URI such as s3://bucket/prefix",
    IAM_ROLE_ARN: "an IAM role ARN such as arn:aws:iam::123456789012:role/ci-deployer",
    BUCKET_URI.format(scheme="gs"): "a Cloud Storage URI such as gs://bucket/prefix",
    SCOPE: "a scope such as infer:fraud-detector (lowercase letters, digits, '-', ':' and '.', starting with a letter)",
    HTTPS_URL: "an https:// URL such as https://auth.example.com/",
    IMAGE_DIGEST: "an image digest: sha256: and 64 lowercase hex digits, as the registry printed it",
    REGION_KEY: "a region written cloud:region, such as aws:eu-west-1 or gcp:europe-west4",
    HEALTH_PATH: "Triton's open health path through the gateway: /v2/health/ready or /v2/health/live",
    STACK_REF: "a fully qualified Pulumi stack name: organization/project/stack",
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


MAX_DEPTH = 32  # the deepest spec nests 5 levels; far below where the composer's recursion would fail


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (`*a`: a few lines of them expand to gigabytes, the "billion laughs")
    and without nesting deeper than MAX_DEPTH (the composer recurses per level)."""

    depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in specs; write the value out in full",
                self.peek_event().start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels; a spec never needs that",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_text(path: Path, display: str) -> str:
    """A spec file's text; a file that is not UTF-8 is a problem on the line of its first bad byte."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError([Problem(display, None, "", f"cannot read file: {exc.strerror}")]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError([Problem(display, line, "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                                    f"{column}); save the file as UTF-8")]) from None


def read_yaml(path: Path, display: str) -> Loaded:
    text = read_text(path, display)
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem(display, mark.line + 1 if mark else None, "", f"invalid YAML: {reason}")]) from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}
    problems: list[Problem] = []
    if node is not None:
        _index_lines(node, (), lines, problems, display)
    if problems:
        raise SpecError(problems)
    return Loaded(data, lines)


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], problems: list[Problem], display: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                problems.append(Problem(display, line, _dotted(path), "a key must be a plain word, not a list or mapping"))
                continue
            if key.value in first:  # YAML says keys are unique; PyYAML would silently keep the last one
                problems.append(Problem(display, line, _dotted(path + (key.value,)),
                                        f"key appears twice, on lines {first[key.value]} and {line}; keep one"))
                continue
            first[key.value] = line
            child = path + (key.value,)
            lines[child] = line
            _index_lines(value, child, lines, problems, display)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            _index_lines(value, path + (index,), lines, problems, display)


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
    if isinstance(got, str) and len(got) > 60:  # the report stays one readable line
        got_text = f"got {got[:40]!r}... ({len(got)} characters)"
    if isinstance(got, bool):
        got_text = f"got {str(got).lower()}"  # as YAML spells it
    # Quoted numbers and 1e20 (YAML 1.1 wants 1.0e+20) are text; the spec is strict, so say how to write them.
    unquote = ""
    if isinstance(got, str) and kind in ("int_type", "float_type", "int_parsing", "float_parsing"):
        try:
            float(got)
            unquote = " (YAML reads this as text: write the number without quotes, and 1e20 as 1.0e+20)"
        except ValueError:
            pass
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
        whole = isinstance(limit, int) or (isinstance(limit, float) and limit.is_integer() and abs(limit) < 1e15)
        shown = str(int(limit)) if whole else f"{limit:g}"
        return f"must be {bounds[kind]} {shown}, {got_text}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, {got_text}"
    if kind == "string_pattern_mismatch":  # every pattern of the spec has words (tests/test_input_errors.py)
        return f"must be {_PATTERN_MEANING.get(ctx.get('pattern'), 'of the right form')}, {got_text}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, {got_text}{unquote}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, {got_text}{unquote}"
    if kind == "finite_number":
        return f"must be a finite number, {got_text}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, {got_text}"
    if kind in ("string_type",):
        # YAML reads 1.33 as a number (and 1.30 as 1.3): text that looks like a number must be quoted.
        hint = f" (quote it: '{got}')" if isinstance(got, (int, float)) and not isinstance(got, bool) else ""
        return f"expected a string, {got_text}{hint}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, {got_text}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, {got_text}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters, {got_text}"
    if kind == "string_too_short":
        return f"must not be empty, {got_text}" if ctx.get("min_length") == 1 else \
            f"must be at least {ctx.get('min_length')} characters, {got_text}"
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
    # The engine has no null config value: a key left empty must not validate here and mean something else there.
    empty = [k for k, v in values.items() if v is None]
    if empty:
        raise SpecError([Problem(display, loaded.line_of(("config", f"{CONFIG_NAMESPACE}:{k}")), _config_key((k,)),
                                 "has no value; give it one, or remove the key to take the default") for k in empty])
    return values, loaded


def stack_config_from_pulumi(config_map: dict[str, Any]) -> dict:
    """The `modelfleet:` keys from the engine's config map, as Pulumi hands them to a running program.

    The engine passes every value as a string: text as it is, numbers as their digits, lists and mappings as
    JSON. So `'1.33'` and `1.33` in the file both arrive as "1.33"; the field's type says which it was meant to
    be: a text field keeps the string, any other field is decoded from JSON (left as text if it is not JSON,
    so that validation reports it against the field)."""
    values = {}
    for key, raw in config_map.items():
        if not key.startswith(CONFIG_NAMESPACE + ":"):
            continue
        name = key.split(":", 1)[1]
        field_info = StackSpec.model_fields.get(name)
        if not isinstance(raw, str) or (field_info is not None and _is_text(field_info.annotation)):
            values[name] = raw
            continue
        try:
            values[name] = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            values[name] = raw
    return values


def _is_text(annotation: Any) -> bool:
    """Whether a field holds text only: str, a Literal of strings, or either of them optional or annotated."""
    if annotation is str:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in args)
    if origin is typing.Annotated:
        return _is_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return all(a is type(None) or _is_text(a) for a in args)
    return False


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
        clash = next((n for n, other in specs.items() if other.kube_name == spec.kube_name), None)
        if clash is not None:
            line = read_yaml(path, display).line_of(("name",))
            problems.append(Problem(display, line, "name", f"model {spec.name!r} gets the Kubernetes name "
                                    f"{spec.kube_name!r} that {clash!r} ({files[clash]}) has; rename one"))
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
    name_problems = stack_name_problems(stack_name, stack, display)
    if name_problems:
        raise SpecError(name_problems)
    specs, files, problems = load_models(root)
    broken = {Path(p.file).stem for p in problems}  # their own problems are already reported
    def model_line(name: str, path: tuple) -> int | None:  # only problems need it: read the file again then
        return read_yaml(root / files[name], files[name]).line_of(path)

    problems.extend(_cross_check(stack, specs, files, display, loaded, broken, model_line))
    problems.extend(_traffic_regions(root, stack, specs, files, model_line))
    problems.extend(_canary_versions(root, stack, specs, files, model_line))
    records, record_problems = load_tuning_records(root, [n for n in stack.models if n in specs])
    problems.extend(record_problems)
    if problems:
        raise SpecError(problems)
    return Fleet(stack_name, stack, tuple(specs[name] for name in stack.models), records)


# The stack's name becomes part of cloud names (plan.cluster_name) and the `stack` tag/label of every resource.
STACK_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The longest cluster name each cloud accepts: GKE 40 (cloud.google.com/kubernetes-engine/docs/reference/rest/
# v1/projects.locations.clusters#Cluster.name), EKS 100 (docs.aws.amazon.com/eks/latest/APIReference/
# API_CreateCluster.html#AmazonEKS-CreateCluster-request-name). A GCP label value holds 63 characters.
CLUSTER_NAME_MAX = {"gcp": 40, "aws": 100}
LABEL_VALUE_MAX = 63


def stack_name_problems(stack_name: str, stack: StackSpec, display: str) -> list[Problem]:
    """Whether the names derived from the stack's name are valid on its clouds: one problem per reason."""
    from modelfleet.plan import cluster_name  # the plan imports this module

    if not STACK_NAME.match(stack_name) or len(stack_name) > LABEL_VALUE_MAX:
        return [Problem(display, None, "", f"stack name {stack_name!r} must be lowercase letters, digits and '-', "
                                           f"starting with a letter, not ending with '-', at most {LABEL_VALUE_MAX} "
                                           "characters: it names the clusters and the `stack` label of every "
                                           "resource. Rename the stack (pulumi stack rename) and its file")]
    problems = []
    for entry in stack.regions:
        name, limit = cluster_name(stack_name, entry), CLUSTER_NAME_MAX[entry.cloud]
        if len(name) > limit:
            problems.append(Problem(
                display, None, "", f"stack name {stack_name!r} makes the {entry.region} cluster name {name!r} "
                                   f"({len(name)} characters); {entry.cloud} allows at most {limit}: use a stack "
                                   f"name of at most {limit - len(name) + len(stack_name)} characters"))
    return problems


def _traffic_regions(root: Path, stack: StackSpec, specs: dict[str, ModelSpec], files: dict[str, str],
                     model_line: Callable[[str, tuple], int | None]) -> list[Problem]:
    """A `traffic.by_region` key no stack runs in is a typo or a leftover: it would size nothing, silently."""
    known = {r.region for r in stack.regions}
    for path in sorted((root / "stacks").glob("Pulumi.*.yaml")):
        try:
            values, _ = stack_config_from_file(path, str(path))
        except SpecError:
            continue  # that stack's own problems are reported when it is validated
        for entry in values.get("regions") or []:
            known.add(entry.get("region") if isinstance(entry, dict) else entry)
    problems = []
    for name in stack.models:
        spec = specs.get(name)
        for key in sorted(spec.traffic.by_region) if spec else ():
            if key not in known:
                problems.append(Problem(files[name], model_line(name, ("traffic", "by_region", key)),
                                        f"traffic.by_region.{key}", f"no stack runs in {key}; stacks run in "
                                        f"{', '.join(sorted(str(k) for k in known))}. Fix the region or remove it"))
    return problems


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
            elif cloud == "aws":
                problems.extend(_aws_buckets_per_region(spec, stack, display, files[name],
                                                        model_line(name, ("source", "aws"))))

    for name in stack.models:
        spec = specs.get(name)
        if spec and "jwt" in spec.gateway.auth and stack.gateway.jwt is None:
            problems.append(Problem(files[name], model_line(name, ("gateway", "auth")), "gateway.auth",
                                    f"jwt needs an issuer, and stack {display} has none: add "
                                    f"{CONFIG_NAMESPACE}:gateway: {{jwt: {{issuer: ..., audiences: [...]}}}} there, "
                                    "or use api-key"))
        if spec and stack.environment != "local" and len(spec.gateway.auth) > 1:
            # Envoy Gateway applies every method a SecurityPolicy lists, all required: it cannot say "a key or
            # a token", which is what the list means.
            problems.append(Problem(files[name], model_line(name, ("gateway", "auth")), "gateway.auth",
                                    f"stack {display} runs in the cloud, where Envoy Gateway cannot accept either "
                                    f"of {spec.gateway.auth}: list one method"))

    from modelfleet.routing.plan import problems as routing_problems  # the plan's own rules, reported here

    for model, path, message in routing_problems(stack, tuple(specs[n] for n in stack.models if n in specs)):
        if model:
            problems.append(Problem(files[model], model_line(model, path), ".".join(path), message))
        else:
            problems.append(Problem(display, line(*path), f"{CONFIG_NAMESPACE}:{'.'.join(path)}", message))

    problems.extend(_check_ensembles(stack, specs, files, model_line))
    networks = region_networks(stack)
    keys = list(networks)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if networks[a].overlaps(networks[b]):
                index = next(n for n, r in enumerate(stack.regions) if r.region == b)
                problems.append(Problem(display, line("regions", index, "cidr"), f"{CONFIG_NAMESPACE}:regions[{index}].cidr",
                                        f"{networks[b]} overlaps {networks[a]} of {a}; give each region its own range"))
    return problems


def _aws_buckets_per_region(spec: ModelSpec, stack: StackSpec, display: str, file: str,
                            line: int | None) -> list[Problem]:
    """Each AWS region needs a bucket of its own region: Triton's S3 client signs for the region it runs in."""
    aws_regions = [r.name for r in stack.regions if r.cloud == "aws"]
    source = spec.source.on("aws")
    if isinstance(source, dict):
        missing = [r for r in aws_regions if r not in source]
        return [Problem(file, line, "source.aws", f"stack {display} runs this model in aws:{r}; add its bucket in "
                        f"that region: source.aws.{r}: s3://<bucket in {r}>/{spec.name}") for r in missing]
    if len(aws_regions) > 1:
        return [Problem(file, line, "source.aws",
                        f"one bucket cannot serve {', '.join('aws:' + r for r in aws_regions)} (stack {display}): "
                        "Triton's S3 client signs for the region it runs in, so each region reads a bucket of its "
                        "own; give one per region, e.g. source.aws: {" + ", ".join(
                            f"{r}: s3://<bucket in {r}>/{spec.name}" for r in aws_regions) + "}")]
    return []


def region_networks(stack: StackSpec) -> dict[str, ipaddress.IPv4Network]:
    """Each region's VPC range: the stack's override, else 10.<network_index>.0.0/16 from the region catalogue."""
    return {
        entry.region: entry.cidr or ipaddress.IPv4Network(f"10.{regions()[entry.cloud][entry.name].network_index}.0.0/16")
        for entry in stack.regions
    }


def _canary_versions(root: Path, stack: StackSpec, specs: dict[str, ModelSpec], files: dict[str, str],
                     model_line: Callable[[str, tuple], int | None]) -> list[Problem]:
    """A canary serves a version the release uploads from source.local (modelfleet.canary): once the model's
    artefacts are there (its stable version built), the canary's version directory must be too."""
    problems = []
    for name in stack.models:
        spec = specs.get(name)
        if spec is None or spec.rollout.canary_version is None or not spec.source.local:
            continue
        source = Path(spec.source.local) if Path(spec.source.local).is_absolute() else root / spec.source.local
        wanted = source / str(spec.rollout.canary_version)
        if (source / str(spec.version)).is_dir() and not wanted.is_dir():
            have = sorted(p.name for p in source.iterdir() if p.is_dir() and p.name.isdigit()) if source.is_dir() else []
            problems.append(Problem(files[name], model_line(name, ("rollout", "canary_version")),
                                    "rollout.canary_version",
                                    f"{spec.rollout.canary_version} has no version directory {wanted} (versions there: "
                                    f"{', '.join(have) or 'none'}); put the canary's model files in it, or name one "
                                    "of those"))
    return problems


def _check_ensembles(stack: StackSpec, specs: dict[str, ModelSpec], files: dict[str, str],
                     model_line: Callable[[str, tuple], int | None]) -> list[Problem]:
    """An ensemble's steps name other specs of the stack, kept in the same model repository: Triton loads an
    ensemble only when its members are in the repository it serves from."""
    problems = []
    for name in stack.models:
        spec = specs.get(name)
        if spec is None:
            continue
        for index, step in enumerate(spec.triton.ensemble):
            where = ("triton", "ensemble", index, "model")
            if step.model not in stack.models:
                known = "" if step.model in specs else f" (no models/{step.model}.yaml)"
                problems.append(Problem(files[name], model_line(name, where), f"triton.ensemble[{index}].model",
                                        f"step model {step.model!r}{known} is not in the stack's models; add it"))
                continue
            member = specs[step.model]
            for kind, mapping, tensors in (("input_map", step.input_map, member.inputs),
                                           ("output_map", step.output_map, member.outputs)):
                unknown = sorted(set(mapping) - {t.name for t in tensors}) if tensors else []
                if unknown:
                    problems.append(Problem(files[name], model_line(name, ("triton", "ensemble", index, kind)),
                                            f"triton.ensemble[{index}].{kind}", f"{step.model} has no "
                                            f"{kind.split('_')[0]} {', '.join(map(repr, unknown))}; its "
                                            f"{kind.split('_')[0]}s: {', '.join(t.name for t in tensors)}"))
            if spec.max_batch_size > member.max_batch_size:
                problems.append(Problem(files[name], model_line(name, ("max_batch_size",)), "max_batch_size",
                                        f"{spec.max_batch_size} exceeds step model {step.model}'s max_batch_size "
                                        f"{member.max_batch_size}; Triton refuses an ensemble that batches more "
                                        "than its steps"))
            for cloud in ("aws", "gcp", "local"):
                mine, theirs = spec.source.on(cloud), member.source.on(cloud)
                if mine and theirs and mine.rstrip("/").rsplit("/", 1)[0] != theirs.rstrip("/").rsplit("/", 1)[0]:
                    problems.append(Problem(files[name], model_line(name, where), f"triton.ensemble[{index}].model",
                                            f"{step.model} lives in another model repository on {cloud} ({theirs}); "
                                            "an ensemble and its steps share one"))
    return problems
