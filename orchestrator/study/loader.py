"""Reading a study file: YAML (a key written twice is an error) -> a validated :class:`Study`,
then one scale and the ``--set`` overrides resolved, and where each value came from. Every error
names the file, the field and the offending value in one line (see ``UserError``)."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.errors import UserError
from orchestrator.study.spec import SCALES, Study

def _format_validation(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    # tags of the report item union ("<table>", "<plot>") are not fields of the file
    loc = ".".join(str(p) for p in first["loc"] if p not in ("function-after",) and not str(p).startswith("<"))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "required field is missing"
    elif "input" in first and first["type"] not in ("value_error",):
        msg = f"{msg} (got {first['input']!r})"
    m = re.match(r"^([\w.]+): (.*)$", msg)
    if m and first["type"] == "value_error":  # model-level checks name their own field
        loc = ".".join(p for p in (loc, m.group(1)) if p)
        msg = m.group(2)
    return loc, msg


def validate(doc: Any, source: str) -> Study:
    if not isinstance(doc, dict):
        raise UserError(f"a study file must be a YAML mapping (got {type(doc).__name__})", source=source)
    try:
        return Study.model_validate(doc)
    except ValidationError as e:
        loc, msg = _format_validation(e)
        raise UserError(msg, source=source, field=loc or None) from None


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently, which would drop e.g. a whole first ``grid:`` block)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise _DuplicateKey(None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def load_raw(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError("no such study file", source=str(path))
    try:
        doc = parse_yaml(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", source=str(path), field=where) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read: {e}", source=str(path)) from None
    return doc


def load(path: str | Path) -> Study:
    return validate(load_raw(path), str(path))


# --------------------------------------------------------------------------------------------
def resolve(raw: dict, source: str, scale: str, sets: list[str] | None = None) -> Study:
    """The study as it runs at ``scale`` with ``--set`` overrides applied, validated again."""
    study = validate(raw, source)  # validates every scale block too
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r} (use {', '.join(SCALES)})", source="--scale")
    if study.scales and scale not in study.scales:
        raise UserError(f"study defines no {scale!r} scale (it has {', '.join(study.scales)})", source=source, field="scales")
    doc = copy.deepcopy(raw)
    override = doc.get("scales", {}).get(scale) or {}
    doc["fixed"] = {**doc.get("fixed", {}), **override.get("fixed", {})}
    for axis, values in (override.get("grid") or {}).items():
        hits = [g for g in [doc.get("grid", {})] + [v.get("grid", {}) for v in doc.get("variants", [])] if axis in g]
        if not hits:
            raise UserError(f"{axis!r} is not a grid axis of the study", source=source, field=f"scales.{scale}.grid.{axis}")
        for g in hits:
            g[axis] = values
    if override.get("resources"):
        doc["resources"] = {**doc.get("resources", {}), **override["resources"]}
    if override.get("max_concurrent"):
        doc["max_concurrent"] = override["max_concurrent"]
    doc["scales"] = {}
    for item in sets or []:
        _apply_set(doc, item)
    return validate(doc, source)


def _parse_value(text: str) -> Any:
    try:
        return parse_yaml(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _apply_set(doc: dict, item: str) -> None:
    if "=" not in item:
        raise UserError(f"expected key=value (got {item!r})", source="--set")
    key, text = item.split("=", 1)
    key = key.strip()
    value = _parse_value(text)
    if not key:
        raise UserError(f"empty key in {item!r}", source="--set")
    top = key.split(".", 1)[0]
    if top in Study.model_fields and top != "scales":
        # a path into the study document, e.g. resources.gpu=0.25 or grid.bits=[2,4]
        parts = key.split(".")
        node = doc
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"{p!r} is not a mapping", source="--set", field=key)
        node[parts[-1]] = value
        return
    grids = [doc.get("grid", {})] + [v.get("grid", {}) for v in doc.get("variants", [])]
    hits = [g for g in grids if key in g]
    for g in hits:  # a grid axis: a list replaces it, a scalar pins it
        g[key] = value if isinstance(value, list) else [value]
    if hits:
        return
    for group, rows in doc.get("zip", {}).items():
        if rows and key in rows[0]:
            raise UserError(f"{key!r} is zipped in group {group!r}; set the whole group with zip.{group}=[...]", source="--set", field=key)
    doc.setdefault("fixed", {})[key] = value
    for v in doc.get("variants") or []:  # a variant's own value would win over the base's: pin it there too
        if key in (v.get("fixed") or {}):
            v["fixed"][key] = value


def origins(raw: dict, scale: str, sets: list[str] | None = None) -> dict[str, list[tuple[str, list]]]:
    """parameter -> [(where it is set, the values it takes there), ...] in the order they apply,
    so an error about a parameter can name the file field (or ``--set``) it came from."""
    out: dict[str, list[tuple[str, list]]] = {}

    def add(key: str, where: str, values: list) -> None:
        out.setdefault(key, []).append((where, values))

    def block(node: Any, prefix: str) -> None:
        if not isinstance(node, dict):
            return
        for k, v in (node.get("fixed") or {}).items():
            add(k, f"{prefix}fixed.{k}", [v])
        for k, v in (node.get("grid") or {}).items():
            add(k, f"{prefix}grid.{k}", v if isinstance(v, list) else [v])
        for g, rows in (node.get("zip") or {}).items():
            for row in rows if isinstance(rows, list) else []:
                for k, v in (row.items() if isinstance(row, dict) else []):
                    add(k, f"{prefix}zip.{g}.{k}", [v])

    block(raw, "")
    for i, v in enumerate(raw.get("variants") or []):
        block(v, f"variants.{i}.")
    block((raw.get("scales") or {}).get(scale) or {}, f"scales.{scale}.")
    for item in sets or []:
        key, _, text = item.partition("=")
        key = key.strip()
        if key.split(".", 1)[0] not in Study.model_fields or key.startswith("scales"):
            value = _parse_value(text)
            add(key, f"--set {key}", value if isinstance(value, list) else [value])
        elif key.startswith(("fixed.", "grid.")):
            add(key.split(".", 1)[1], f"--set {key}", [_parse_value(text)])
    return out
