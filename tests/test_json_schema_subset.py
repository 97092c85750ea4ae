"""The JSON Schema subset of pocketlm.json_constraint: what compiles, what is rejected and with
which message, and what parse_output accepts. (Decoding under the constraint: test_json_constraint.py.)"""

import pytest

from pocketlm.json_schema import SchemaError, compile_schema, parse_output
from test_json_constraint import MIXED

# ---- the schema subset ----

@pytest.mark.parametrize("prop, kind, nullable", [
    ({"type": "string"}, "string", False),
    ({"type": ["string", "null"]}, "string", True),
    ({"type": ["null", "string"]}, "string", True),
    ({"type": "null"}, "null", False),
    ({"enum": ["a", None, "b c"]}, "enum", False),
    ({"type": "string", "enum": ["a"]}, "enum", False),
    ({"type": "string", "maxLength": 5, "title": "t", "description": "d"}, "string", False),
    ({"type": ["string", "null"], "maxLength": 0}, "string", True),
])
def test_supported_property_forms_compile(prop, kind, nullable):
    schema = compile_schema({"$schema": "x", "type": "object", "properties": {"p": prop}, "required": ["p"],
                             "additionalProperties": False})
    (p,) = schema.properties
    assert (p.name, p.kind, p.nullable, p.required, p.max_length) == ("p", kind, nullable, True, prop.get("maxLength"))


@pytest.mark.parametrize("prop, message", [
    ({"type": "object", "properties": {"x": {"type": "string"}}}, "type 'object' is not supported (no nested objects"),
    ({"type": "array", "items": {"type": "string"}}, "type 'array' is not supported"),
    ({"type": "integer"}, "type 'integer' is not supported"),
    ({"type": "number"}, "type 'number' is not supported"),
    ({"type": "boolean"}, "type 'boolean' is not supported"),
    ({"type": ["string", "integer"]}, "type 'integer' is not supported"),
    ({"type": []}, '"type" must be a type name or a list of them'),
    ({"enum": [1, "a"]}, "enum member 1 is not supported: members must be strings or null"),
    ({"enum": [True]}, "enum member True is not supported"),
    ({"enum": []}, '"enum" must be a non-empty list'),
    ({"enum": ["a", "a"]}, "enum lists a member twice"),
    ({"type": "null", "enum": ["a"]}, "enum member 'a' does not match \"type\""),
    ({"enum": ["a"], "maxLength": 2}, '"maxLength" applies to free strings, not to an enum'),
    ({"type": "string", "maxLength": -1}, '"maxLength" must be an integer >= 0'),
    ({"type": "string", "maxLength": 2.5}, '"maxLength" must be an integer >= 0'),
    ({"type": "null", "maxLength": 3}, '"maxLength" needs "type": "string"'),
    ({"type": "string", "pattern": "^a"}, "unsupported keyword(s) ['pattern']"),
    ({"anyOf": [{"type": "string"}]}, "unsupported keyword(s) ['anyOf']"),
    ({"$ref": "#/defs/x"}, "unsupported keyword(s) ['$ref']"),
    ({}, 'needs "type" or "enum"'),
    ("string", 'must be an object such as {"type": "string"}'),
])
def test_unsupported_property_forms_are_rejected_with_a_specific_message(prop, message):
    with pytest.raises(SchemaError) as e:
        compile_schema({"type": "object", "properties": {"p": prop}})
    assert message in str(e.value) and "property 'p'" in str(e.value)


@pytest.mark.parametrize("schema, message", [
    (["not", "a", "dict"], "the schema must be a JSON object"),
    ({"type": "array", "properties": {}}, 'the top level must be {"type": "object"'),
    ({"properties": {}}, 'the top level must be {"type": "object"'),
    ({"type": "object"}, '"properties" must be an object'),
    ({"type": "object", "properties": {}, "additionalProperties": True}, '"additionalProperties" must be false'),
    ({"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}, '"additionalProperties"'),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "\"required\" names ['b']"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": "a"}, '"required" must be a list'),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "a"]}, "lists a name twice"),
    ({"type": "object", "properties": {}, "patternProperties": {}}, "unsupported keyword(s) ['patternProperties']"),
    ({"type": "object", "properties": {"\ud800": {"type": "string"}}}, "without lone surrogates"),
])
def test_unsupported_top_level_forms_are_rejected(schema, message):
    with pytest.raises(SchemaError) as e:
        compile_schema(schema)
    assert message in str(e.value)


@pytest.mark.parametrize("text, message", [
    ('{"title": "x", "done": null', "not valid JSON"),
    (b'{"title": "\xff"}', "not valid JSON"),
    ('["title"]', "must be a JSON object"),
    ('{"title": "x", "done": null}', "missing required: ['tag']"),
    ('{"title": "x", "done": null, "tag": "t", "extra": 1}', "unknown: ['extra']"),
    ('{"title": 3, "done": null, "tag": "t"}', '"title" must be string'),
    ('{"title": null, "done": null, "tag": "t"}', '"title" must be string'),
    ('{"title": "x", "done": "no", "tag": "t"}', '"done" must be null'),
    ('{"title": "x", "priority": "mid", "done": null, "tag": "t"}', '"priority" must be enum'),
    ('{"title": "0123456789abc", "done": null, "tag": "t"}', "longer than maxLength 12"),
])
def test_parse_output_rejects_what_the_schema_does_not_allow(text, message):
    with pytest.raises(SchemaError) as e:
        parse_output(text, compile_schema(MIXED))
    assert message in str(e.value)


def test_parse_output_accepts_any_valid_spelling():
    obj = parse_output(b'{ "done":null,"tag":"\\u00e9","title":"" ,"priority":null}', compile_schema(MIXED))
    assert obj == {"done": None, "tag": "é", "title": "", "priority": None}
