"""Offline policy review: the CrossGuard pack in `policies/` run against an offline evaluation, with no CLI.

The pack's own policy objects are called exactly as the Pulumi analyzer calls them: resource policies once per
resource with `ResourceValidationArgs` (props wrapped by `unknown_checking_proxy`, the resource's provider as a
`PolicyProviderResource`), stack policies once with `StackValidationArgs` over every resource (parents and
dependencies linked). Enforcement levels and per-policy config come from the same JSON file users pass to
`pulumi preview --policy-pack policies --policy-pack-config policies/config/<stack>.json`.

Differences from a real preview, by construction: props are the recorded *inputs* (a stack policy under the CLI
sees outputs, which during preview are the inputs plus unknowns), and the engine's default providers are absent
(`provider` is None for resources that do not name an explicit provider).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from jsonschema import Draft7Validator
from pulumi_policy import (EnforcementLevel, PolicyCustomTimeouts, PolicyProviderResource, PolicyResource,
                           PolicyResourceOptions, ResourceValidationArgs, ResourceValidationPolicy,
                           StackValidationArgs, StackValidationPolicy)
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from modelfleet.loader import SpecError, read_text
from modelfleet.offline import PROJECT, Evaluation, Recorded

PACK_DIR = Path(__file__).resolve().parent.parent / "policies"
PACKAGE = "modelfleet_policies"
LEVELS = ("mandatory", "advisory", "remediate", "disabled")


@dataclass(frozen=True, order=True)
class Violation:
    policy: str
    level: str  # "mandatory" or "advisory"
    urn: str
    message: str

    def as_dict(self) -> dict:
        return {"policy": self.policy, "level": self.level, "urn": self.urn, "message": self.message}


@dataclass
class Review:
    stack: str
    evaluated: list[str]  # every policy run (disabled ones are not), sorted
    violations: list[Violation]  # mandatory first, then by policy, urn, message
    config_file: str | None = None  # the policy config read, if any
    not_applicable: list[str] = field(default_factory=list)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]

    @property
    def advisory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "advisory"]

    @property
    def passed(self) -> bool:
        return not self.mandatory

    def to_json(self) -> dict:
        """The `policies` value of `modelfleet plan --format json`: {evaluated, violations: [{policy, level, urn,
        message}]}."""
        return {"evaluated": list(self.evaluated), "violations": [v.as_dict() for v in self.violations]}


class PolicyConfigError(ValueError):
    """The policy config names a policy or a setting the pack does not have, or an unknown enforcement level."""


# ---------------------------------------------------------------- loading the pack and its config


def load_pack(pack_dir: Path | None = None) -> tuple:
    """The pack's policies, imported from `<pack_dir>/modelfleet_policies` (the same modules the CLI serves)."""
    pack_dir = (pack_dir or PACK_DIR).resolve()
    module = sys.modules.get(PACKAGE)
    if module is not None and Path(module.__file__).resolve().parent.parent != pack_dir:
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
    if str(pack_dir) not in sys.path:
        sys.path.insert(0, str(pack_dir))
    return tuple(importlib.import_module(PACKAGE).POLICIES)


def config_path(stack: str, pack_dir: Path | None = None) -> Path:
    """`policies/config/<stack>.json`: the file `pulumi preview --policy-pack-config` is given for that stack."""
    return (pack_dir or PACK_DIR) / "config" / f"{stack}.json"


def load_policy_config(stack: str, pack_dir: Path | None = None) -> tuple[dict, str | None]:
    path = config_path(stack, pack_dir)
    if not path.exists():
        return {}, None
    return read_policy_config(path), str(path)


def read_policy_config(path: Path) -> Any:
    """A policy config file's JSON: not UTF-8, not JSON or a key given twice is a `PolicyConfigError`."""
    try:
        text = read_text(path, str(path))
    except SpecError as exc:
        problem = exc.problems[0]
        raise PolicyConfigError(f"{path}: " + (f"line {problem.line}: " if problem.line else "") + problem.message) from None

    def unique(pairs: list) -> dict:  # json.loads would keep the last of two equal keys without a word
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise PolicyConfigError(f"{path}: key {twice[0]!r} appears twice in one object; keep one")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise PolicyConfigError(f"{path}: invalid JSON: {exc}") from None
    except RecursionError:
        raise PolicyConfigError(f"{path}: nested too deeply to be a policy config") from None


def _settings(policies: tuple, raw: Mapping[str, Any], where: str) -> dict[str, tuple[EnforcementLevel, dict]]:
    """Each policy's enforcement level and config, as the CLI computes them from the pack and the config file."""
    if not isinstance(raw, Mapping):
        raise PolicyConfigError(f"{where}: expected a JSON object mapping policy names to an enforcement level or "
                                f'{{"enforcementLevel": ..., <setting>: ...}}, got {_json_kind(raw)}')
    by_name = {p.name: p for p in policies}
    unknown = sorted(set(raw) - set(by_name) - {"all"})
    if unknown:
        raise PolicyConfigError(f"{where}: no policy named {', '.join(unknown)}; known: {', '.join(sorted(by_name))}")

    def level_of(value: Any, key: str) -> EnforcementLevel | None:
        if value is None:
            return None
        if value not in LEVELS:
            raise PolicyConfigError(f"{where}: {key}: enforcement level must be one of {', '.join(LEVELS)}, got {value!r}")
        return EnforcementLevel(value)

    default_level = level_of(raw.get("all"), "all")
    out = {}
    for policy in policies:
        entry = raw.get(policy.name)
        props: dict = {}
        level = None
        if isinstance(entry, str):
            level = level_of(entry, policy.name)
        elif isinstance(entry, Mapping):
            level = level_of(entry.get("enforcementLevel"), f"{policy.name}.enforcementLevel")
            props = {k: v for k, v in entry.items() if k != "enforcementLevel"}
            known = set(policy.config_schema.properties) if policy.config_schema else set()
            extra = sorted(set(props) - known)
            if extra:
                raise PolicyConfigError(f"{where}: {policy.name} has no setting {', '.join(extra)}; "
                                        f"known: {', '.join(sorted(known)) or 'none'}")
            _check_settings(policy, props, where)
        elif entry is not None:
            raise PolicyConfigError(f"{where}: {policy.name}: expected an enforcement level or a mapping")
        if policy.config_schema:  # the CLI fills schema defaults in; so do we
            for key, schema in policy.config_schema.properties.items():
                if key not in props and "default" in schema:
                    props[key] = schema["default"]
        out[policy.name] = (level or default_level or policy.enforcement_level or EnforcementLevel.ADVISORY, props)
    return out


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _check_settings(policy: Any, props: dict, where: str) -> None:
    """The settings against the JSON schema the policy declares (its configSchema, which the Pulumi CLI also
    validates against before running the pack): the first mismatch, in words, with the setting's path."""
    if not policy.config_schema:
        return
    schema = {"type": "object", "properties": policy.config_schema.properties}
    if policy.config_schema.required:
        schema["required"] = list(policy.config_schema.required)
    errors = sorted(Draft7Validator(schema).iter_errors(props), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        expected = error.schema.get("type") if error.validator == "type" else None
        reason = (f"must be {_TYPE_WORDS.get(expected, expected)}, got {_json_kind(error.instance)} "
                  f"{json.dumps(error.instance)}" if expected else error.message)
        raise PolicyConfigError(f"{where}: {policy.name}{path}: {reason}")


_TYPE_WORDS = {"integer": "a whole number", "number": "a number", "boolean": "true or false", "string": "a string",
               "array": "a list", "object": "an object"}


# ---------------------------------------------------------------- running it


def _run(result: Any) -> None:
    if inspect.isawaitable(result):
        asyncio.run(_await(result))


async def _await(result: Any) -> None:
    await result


def _options(parent: str | None) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], parent)


def _providers(resources: list[Recorded]) -> dict[tuple[str, str], PolicyProviderResource]:
    return {
        (r.type.split(":")[2], r.name): PolicyProviderResource(r.type, unknown_checking_proxy(r.inputs), r.urn, r.name)
        for r in resources if r.is_provider
    }


def _provider_of(r: Recorded, providers: dict) -> PolicyProviderResource | None:
    return providers.get((r.type.split(":")[0], r.provider)) if r.provider else None


def root_urn(stack: str) -> str:
    """Where the engine files a stack violation that names no resource."""
    return f"urn:pulumi:{stack}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{stack}"


def review(evaluation: Evaluation, stack_config: Mapping[str, Any] | str | Path | None = None, *,
           pack_dir: Path | None = None) -> Review:
    """Run the policy pack against an offline evaluation.

    `stack_config` is the pack's config for this stack, in `--policy-pack-config` form
    (`{"all": "advisory", "<policy>": "<level>" | {"enforcementLevel": ..., "<setting>": ...}}`): a mapping, a path
    to such a JSON file, or None to read `policies/config/<stack>.json` (defaults alone when that file is absent).
    """
    policies = load_pack(pack_dir)
    if stack_config is None:
        raw, where = load_policy_config(evaluation.stack, pack_dir)
    elif isinstance(stack_config, (str, Path)):
        where = str(stack_config)
        raw = read_policy_config(Path(stack_config))
    else:
        raw, where = dict(stack_config), None
    settings = _settings(policies, raw, where or "policy config")

    resources = sorted(evaluation.resources, key=lambda r: r.urn)
    providers = _providers(resources)
    root = root_urn(evaluation.stack)
    found: set[Violation] = set()
    evaluated: list[str] = []
    not_applicable: list[str] = []

    for policy in policies:
        level, props = settings[policy.name]
        if level == EnforcementLevel.DISABLED:
            continue
        evaluated.append(policy.name)
        shown = "mandatory" if level in (EnforcementLevel.MANDATORY, EnforcementLevel.REMEDIATE) else "advisory"

        def reporter(default_urn: str, resource_level: bool):
            def report(message: str, urn: str | None = None) -> None:
                target = default_urn if resource_level or not urn else urn
                found.add(Violation(policy.name, shown, target, message))
            return report

        def guarded(urn: str, call) -> None:
            try:
                call()
            except UnknownValueError as exc:
                found.add(Violation(policy.name, "advisory", urn,
                                    f"can't run policy '{policy.name}' during preview: {exc.message}"))
            except _NotApplicableError as exc:
                not_applicable.append(f"{policy.name}: {exc.reason or 'not applicable'}")
            except Exception as exc:  # a policy bug must show up in the report, and fail the check
                found.add(Violation(policy.name, "mandatory", urn,
                                    f"policy '{policy.name}' failed on this resource: {type(exc).__name__}: {exc}"))

        if isinstance(policy, ResourceValidationPolicy):
            for r in resources:
                args = ResourceValidationArgs(r.type, unknown_checking_proxy(r.inputs), r.urn, r.name,
                                              _options(r.parent), _provider_of(r, providers), dict(props), {})
                guarded(r.urn, lambda: _run(policy.validate(args, reporter(r.urn, True))))
        elif isinstance(policy, StackValidationPolicy):
            stack_resources = _stack_resources(resources, providers)
            args = StackValidationArgs(stack_resources, dict(props), {})
            guarded(root, lambda: _run(policy.validate(args, reporter(root, False))))

    violations = sorted(found, key=lambda v: (v.level != "mandatory", v.policy, v.urn, v.message))
    return Review(evaluation.stack, sorted(evaluated), violations, where, sorted(not_applicable))


def _stack_resources(resources: list[Recorded], providers: dict) -> list[PolicyResource]:
    by_urn: dict[str, PolicyResource] = {}
    for r in resources:
        by_urn[r.urn] = PolicyResource(r.type, unknown_checking_proxy(r.inputs), r.urn, r.name, _options(r.parent),
                                       _provider_of(r, providers), None, [], {})
    for r in resources:
        resource = by_urn[r.urn]
        resource.parent = by_urn.get(r.parent) if r.parent else None
        resource.dependencies = [by_urn[d] for d in r.dependencies if d in by_urn]
    return list(by_urn.values())
