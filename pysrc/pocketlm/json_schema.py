"""The JSON Schema subset of constrained decoding (standard library only): compile it, check an output.

pocketlm.json_constraint decodes under a compiled schema so that every output passes parse_output.

Supported JSON Schema subset (`compile_schema`; anything else raises `SchemaError`):
- top level: {"type": "object", "properties": {...}, "required": [...], "additionalProperties": false};
  "required" and "additionalProperties" may be omitted (additionalProperties must not be true);
- each property is {"type": "string"}, {"type": ["string", "null"]} (either order), {"type": "null"}
  or {"enum": [...]} of strings and/or null (a "type" next to "enum" must agree with the members);
  string properties may have "maxLength" (in characters);
- "title" and "description" are accepted anywhere and ignored, "$schema" at the top level.
  No nested objects, arrays, numbers, booleans, patterns or $refs.

Output format, fixed and canonical: exactly what `json.dumps(obj, ensure_ascii=False)` prints for a
dict with its keys in the schema's property order, starting at "{":

    {"reminder": "walk the dog", "time": "at 7pm", "recurrence": null}

Required properties always appear; optional ones may be left out. Strings are raw UTF-8 except
`"` -> `\\"`, `\\` -> `\\\\` and control characters (< 0x20), written as json.dumps writes them
(`\\n`, `\\t`, `\\r`, `\\b`, `\\f`, else `\\u00XX` in lower-case hex); no other escape is allowed,
so every value has one spelling and `json.dumps(json.loads(out), ensure_ascii=False) == out`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class SchemaError(ValueError):
    """A schema outside the supported subset, a budget too small for it, or an output that fails it."""


@dataclass(frozen=True)
class Property:
    name: str
    kind: str  # "string" | "null" | "enum"
    required: bool
    nullable: bool = False  # a "string" that may also be null
    members: tuple = ()  # "enum": its str | None members
    max_length: int | None = None  # "string": at most this many characters


@dataclass(frozen=True)
class ObjectSchema:
    properties: tuple[Property, ...]


_FORMS = ('supported property forms: {"type": "string"} (optional "maxLength"), {"type": ["string", "null"]}, '
          '{"type": "null"}, {"enum": [strings and/or null]}')
_TOP_KEYS = ["$schema", "additionalProperties", "description", "properties", "required", "title", "type"]
_PROP_KEYS = ["description", "enum", "maxLength", "title", "type"]


def _need(ok, message: str) -> None:
    if not ok:
        raise SchemaError(message)


def compile_schema(schema: dict) -> ObjectSchema:
    """Check `schema` against the supported subset and compile it.

    >>> s = compile_schema({"type": "object", "properties": {"time": {"type": ["null", "string"]},
    ...     "unit": {"enum": ["min", "h", None]}}, "required": ["time"], "additionalProperties": False})
    >>> [(p.name, p.kind, p.nullable, p.required) for p in s.properties]
    [('time', 'string', True, True), ('unit', 'enum', False, False)]
    """
    _need(isinstance(schema, dict), f"the schema must be a JSON object (a dict), got {type(schema).__name__}")
    unknown = sorted(set(schema) - set(_TOP_KEYS), key=str)
    _need(not unknown, f"unsupported keyword(s) {unknown} at the top level; supported: {_TOP_KEYS}")
    _need(schema.get("type") == "object", f'the top level must be {{"type": "object", ...}}: {schema.get("type")!r}')
    _need(schema.get("additionalProperties", False) is False,
          f'"additionalProperties" must be false or omitted, got {schema.get("additionalProperties")!r}: '
          'the output holds only the properties listed under "properties"; list them all there')
    props = schema.get("properties")
    _need(isinstance(props, dict), f'"properties" must be an object mapping names to property schemas, got {props!r}')
    required = schema.get("required", [])
    _need(isinstance(required, list) and all(isinstance(r, str) for r in required),
          f'"required" must be a list of property names, got {required!r}')
    missing = [r for r in required if r not in props]
    _need(not missing, f'"required" names {missing}, which are not in "properties"; add them there or drop them')
    _need(len(set(required)) == len(required), f'"required" lists a name twice: {required!r}')
    return ObjectSchema(tuple(_compile_property(n, p, n in required) for n, p in props.items()))


def _compile_property(name, spec, required: bool) -> Property:
    where = f"property {name!r}"
    _need(isinstance(name, str) and _is_utf8(name), f"{where}: a name must be a string without lone surrogates")
    _need(isinstance(spec, dict), f'{where}: must be an object such as {{"type": "string"}}, got {spec!r}; {_FORMS}')
    types = spec.get("type")  # checked first: "type": "object" says more than "properties" would
    if types is not None:
        listed = [types] if isinstance(types, str) else types
        _need(isinstance(listed, list) and listed and all(isinstance(t, str) for t in listed),
              f'{where}: "type" must be a type name or a list of them, got {types!r}')
        bad = [t for t in listed if t not in ("string", "null")] + [None]
        _need(bad[0] is None, f"{where}: type {bad[0]!r} is not supported (no nested objects, arrays, numbers "
                              f"or booleans); {_FORMS}")
        types = set(listed)
    unknown = sorted(set(spec) - set(_PROP_KEYS), key=str)
    _need(not unknown, f"{where}: unsupported keyword(s) {unknown}; {_FORMS}")
    if "enum" in spec:
        members = spec["enum"]
        _need(isinstance(members, list) and members, f'{where}: "enum" must be a non-empty list, got {members!r}')
        for m in members:
            _need(m is None or isinstance(m, str) and _is_utf8(m),
                  f"{where}: enum member {m!r} is not supported: members must be strings or null")
            _need(types is None or ("null" if m is None else "string") in types,
                  f'{where}: enum member {m!r} does not match "type" {spec.get("type")!r}')
        _need(len(set(members)) == len(members), f"{where}: enum lists a member twice: {members!r}")
        _need("maxLength" not in spec, f'{where}: "maxLength" applies to free strings, not to an enum; drop it')
        return Property(name, "enum", required, members=tuple(members))
    _need(types is not None, f'{where}: needs "type" or "enum"; {_FORMS}')
    max_length = spec.get("maxLength")
    _need(max_length is None or "string" in types, f'{where}: "maxLength" needs "type": "string" or ["string", "null"]')
    _need(max_length is None or type(max_length) is int and max_length >= 0,
          f'{where}: "maxLength" must be an integer >= 0, got {max_length!r}')
    kind = "null" if types == {"null"} else "string"
    return Property(name, kind, required, nullable=kind == "string" and "null" in types, max_length=max_length)


def parse_output(text: str | bytes, schema: ObjectSchema) -> dict:
    """json.loads(text), checked against the compiled schema (not the key order or spacing).

    >>> s = compile_schema({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}})
    >>> parse_output('{"a": "xyz"}', s), parse_output(b' { } ', s)
    ({'a': 'xyz'}, {})
    """
    try:
        obj = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SchemaError(f"the output is not valid JSON: {e}") from None
    _need(isinstance(obj, dict), f"the output must be a JSON object, got {type(obj).__name__}")
    props = {p.name: p for p in schema.properties}
    extra = [k for k in obj if k not in props]
    missing = [p.name for p in schema.properties if p.required and p.name not in obj]
    _need(not extra and not missing, f"the output has keys {list(obj)}; unknown: {extra}, missing required: {missing}")
    for key, v in obj.items():
        p = props[key]
        ok = {"null": v is None, "enum": (v is None or isinstance(v, str)) and v in p.members,
              "string": isinstance(v, str) or (p.nullable and v is None)}[p.kind]
        _need(ok, f'"{key}" must be {p.kind}{" or null" if p.nullable else ""}'
                  f'{" of " + repr(list(p.members)) if p.members else ""}, got {v!r}')
        _need(p.max_length is None or v is None or len(v) <= p.max_length,
              f'"{key}" is longer than maxLength {p.max_length}: {v!r}')
    return obj


def _is_utf8(s: str) -> bool:  # no lone surrogates (a JS string may hold them)
    return s.encode("utf-8", "replace").decode("utf-8") == s
