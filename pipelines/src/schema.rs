//! The JSON Schema of pipeline files, generated from the decoders' field tables so that it
//! cannot drift from what Pipewright accepts. Editors use it to validate and complete.

use serde_json::{Map, Value, json};

use crate::decode::{Object, Ty};

/// The schema (draft-07, which YAML editors support best), pretty-printed.
pub fn json_schema() -> String {
    let mut root = object(&crate::parse::PIPELINE);
    if let Value::Object(map) = &mut root {
        map.insert(
            "$schema".into(),
            json!("http://json-schema.org/draft-07/schema#"),
        );
        map.insert(
            "$id".into(),
            json!("https://pipewright.dev/schema/pipeline.json"),
        );
        map.insert(
            "description".into(),
            json!("A Pipewright pipeline: one file under .pipewright/"),
        );
    }
    let mut text = serde_json::to_string_pretty(&root).expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// Scalars as YAML writes them: `version: 1.8` must validate as text.
fn scalar() -> Value {
    json!({ "type": ["string", "number", "boolean"] })
}

fn ty(t: &Ty) -> Value {
    match t {
        Ty::String => scalar(),
        Ty::Template => {
            let mut s = scalar();
            s["description"] = json!(
                "May use ${{ sha }}, ${{ short_sha }}, ${{ ref_name }}, ${{ repo }}, ${{ inputs.NAME }}."
            );
            s
        }
        Ty::Bool => json!({ "type": "boolean" }),
        Ty::Integer(max) => json!({ "type": "integer", "minimum": 1, "maximum": max }),
        Ty::Duration => json!({ "type": "string", "pattern": "^([0-9]+[smhd])+$" }),
        Ty::Memory => {
            json!({ "type": ["string", "integer"], "pattern": "^[0-9]+([kKmMgG][bB]?)?$" })
        }
        Ty::Enum(words) => json!({ "enum": words }),
        Ty::ListOrOne(inner) => {
            json!({ "anyOf": [ty(inner), { "type": "array", "items": ty(inner) }] })
        }
        Ty::List(inner) => json!({ "type": "array", "items": ty(inner) }),
        Ty::MapOf(inner) => json!({ "type": "object", "additionalProperties": ty(inner) }),
        Ty::Object(o) => object(o),
        Ty::OneOf(options) => json!({ "anyOf": options.iter().map(ty).collect::<Vec<_>>() }),
        Ty::Null => json!({ "type": "null" }),
    }
}

fn object(o: &Object) -> Value {
    let mut properties = Map::new();
    for field in o.fields {
        let mut schema = ty(&field.ty);
        if let Value::Object(map) = &mut schema {
            map.insert("description".into(), json!(field.doc));
        }
        properties.insert(field.name.into(), schema);
    }
    let required: Vec<&str> = o
        .fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    let mut out = json!({ "type": "object", "title": o.title, "properties": properties, "additionalProperties": false });
    if !required.is_empty() {
        out["required"] = json!(required);
    }
    out
}
