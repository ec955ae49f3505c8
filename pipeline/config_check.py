"""Config errors that fit on a screen: the key, the bad value, what is expected and the file that set it.

snakemake.utils.validate reports a bad key followed by the whole schema and the whole merged config
(94 lines for a misspelled nested key, 1,456 for a top-level one) and never says which of the merged
config files the key came from. `check_config` validates the same config against the same schema first
and stops on the most relevant error in at most ten lines.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import yaml
from jsonschema import validators
from jsonschema.exceptions import ValidationError, relevance
from snakemake_interface_common.exceptions import WorkflowError

MAX_LINES = 10
WIDTH = 100  # problems and details are clipped (long values, enum and key lists); file names never are
_ABSENT = object()
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # PyYAML needs 3.0e-6, not 3e-6, for a float
Key = list[str | int]
Source = tuple[str, Any]  # (name shown to the user, parsed content)


class ConfigError(WorkflowError):
    """The merged config breaks the schema.

    A WorkflowError, so Snakemake prints the message and the two lines that raised it, not a Python traceback.
    """


def check_config(
    config: Mapping[str, Any],
    schema_path: str | PathLike[str],
    config_files: Sequence[str | PathLike[str]],
    command_line: Mapping[str, Any] | None = None,
) -> None:
    """Raise ConfigError naming the most relevant schema violation of `config`, if any.

    `config_files` are the files merged into `config`, in merge order (a later file overrides an earlier
    one); `command_line` holds the `--config` values, merged last.
    """
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = validators.validator_for(schema)(schema)  # the draft the schema's $schema declares
    # Most relevant first (jsonschema's best_match order, without its descent into anyOf branches:
    # _explain summarises those itself).
    errors = sorted(validator.iter_errors(config), key=relevance, reverse=True)
    if errors:
        raise ConfigError(_message(errors, _load_sources(config_files), command_line or {}))


def _message(errors: list[ValidationError], sources: list[Source], command_line: Mapping[str, Any]) -> str:
    key, problem, details = _explain(errors[0])
    setters = _setters(key, sources, command_line)
    overriding = f" (overriding {', '.join(setters[:-1])})" if len(setters) > 1 else ""
    merged = ", ".join(name for name, _ in sources) + (", then --config" if command_line else "")
    lines = [
        f"Invalid config at {_dotted(key)}: {_clip(problem)}",
        *(f"  {_clip(detail)}" for detail in details),
        f"  set in: {setters[-1]}{overriding}",
        f"  config files merged (later ones override earlier): {merged}",
    ]
    others = errors[1:]
    room = MAX_LINES - len(lines)
    shown = others if len(others) <= room else others[: room - 1]  # keep a line for "... and N more"
    for error in shown:
        other_key, other_problem, _ = _explain(error)
        setter = _setters(other_key, sources, command_line)[-1]
        lines.append(f"  also {_dotted(other_key)}: {_clip(other_problem)} (set in {setter})")
    if len(shown) < len(others):
        lines.append(f"  ... and {len(others) - len(shown)} more errors")
    return "\n".join(lines)


def _explain(error: ValidationError) -> tuple[Key, str, list[str]]:
    """The key an error is about, the problem in one phrase, and detail lines."""
    key: Key = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        # jsonschema reports an unknown key at its parent: name the key itself and its likely intent.
        known = list(error.schema.get("properties", {}))
        unknown = [name for name in error.instance if name not in known]
        verb = "was" if len(unknown) == 1 else "were"
        problem = f"unknown key ({', '.join(map(repr, unknown))} {verb} unexpected){_suggest(unknown[0], known)}"
        details = [f"value: {_short(error.instance[unknown[0]])}", f"expected one of the keys: {', '.join(known)}"]
        return [*key, unknown[0]], problem, details
    if error.validator in ("anyOf", "oneOf"):
        # The branches' own errors repeat each sub-schema; one line of alternatives says the same.
        branches = error.validator_value
        options = [value for branch in branches for value in branch.get("enum", [])]
        fits = "none" if error.context else "more than one"  # oneOf fails both ways; only "none" has context
        problem = f"{_short(error.instance)} fits {fits} of the alternatives{_suggest(error.instance, options)}"
        return key, problem, ["expected: " + ", or ".join(_alternative(branch, error.instance) for branch in branches)]
    problem = error.message
    if problem.startswith(repr(error.instance)):  # jsonschema puts the whole value first: shorten it
        problem = _short(error.instance) + problem[len(repr(error.instance)) :]
    if error.validator == "enum":
        problem += _suggest(error.instance, error.validator_value)
    if error.validator == "type" and isinstance(error.instance, str) and _SCIENTIFIC.fullmatch(error.instance):
        problem += " (YAML 1.1 reads it as text: write e.g. 3.0e-6)"
    return key, problem, []


def _alternative(branch: Mapping[str, Any], instance: Any) -> str:
    """A few words for what one anyOf/oneOf branch of this schema accepts."""
    words = []
    if "enum" in branch:
        words.append(" / ".join(map(repr, branch["enum"])))
    elif "type" in branch:
        words.append(" or ".join(branch["type"]) if isinstance(branch["type"], list) else branch["type"])
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    words += [f"{sign} {branch[name]}" for name, sign in bounds.items() if name in branch]
    if branch.get("maxProperties") == 0:
        words.append("empty")
    if "required" in branch:
        missing = [name for name in branch["required"] if not isinstance(instance, Mapping) or name not in instance]
        words.append(f"with the keys {', '.join(branch['required'])} (missing: {', '.join(missing) or 'none'})")
    return " ".join(words) or "a sub-schema"


def _suggest(value: Any, candidates: Sequence[Any]) -> str:
    match = difflib.get_close_matches(str(value), [str(candidate) for candidate in candidates], n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def _load_sources(config_files: Sequence[str | PathLike[str]]) -> list[Source]:
    """Each config file once, at its last place in the merge order (where its values take effect)."""
    order: dict[Path, None] = {}
    for path in reversed(config_files):
        order.setdefault(Path(path).resolve(), None)
    return [(_shown(path), yaml.safe_load(path.read_text(encoding="utf-8")) or {}) for path in reversed(order)]


def _shown(path: Path) -> str:
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _setters(key: Key, sources: list[Source], command_line: Mapping[str, Any]) -> list[str]:
    """Where `key` is set, in merge order: the last one is the value the config has."""
    setters = [name for name, content in sources if _lookup(content, key) is not _ABSENT]
    if _lookup(command_line, key) is not _ABSENT:
        setters.append("--config on the command line")
    return setters or ["no config file (so --config on the command line)"]


def _lookup(content: Any, key: Key) -> Any:
    for part in key:
        in_mapping = isinstance(content, Mapping) and part in content
        in_list = isinstance(content, list) and isinstance(part, int) and part < len(content)
        if not (in_mapping or in_list):
            return _ABSENT
        content = content[part]
    return content


def _dotted(key: Key) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in key)
    return text.removeprefix(".") or "(top level)"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _clip(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."
