//! Any YAML document (a Gitea Actions workflow, say) read with the same bounds as a
//! pipeline file and handed out as JSON, every scalar as its text: for callers that need a
//! few keys of a foreign file without a YAML library of their own.

use serde_json::{Map, Value as Json};

use crate::yaml::{self, Node, Value};

/// The document as JSON: mappings as objects (keys as their text; a later duplicate key
/// wins), lists as arrays, scalars as strings as written (no type guessed), empty values and
/// an empty document as `null`. The error names the line and column of a syntax error or of
/// a crossed limit (1 MiB, 64 levels, 100 000 values).
pub fn yaml_to_json(source: &str) -> Result<Json, String> {
    match yaml::parse(source) {
        Ok(Some(node)) => Ok(to_json(&node)),
        Ok(None) => Ok(Json::Null),
        Err(e) => Err(format!("{}:{}: {}", e.pos.line, e.pos.col, e.message)),
    }
}

/// At most [`yaml::MAX_DEPTH`] levels deep: the recursion is bounded by the parser.
fn to_json(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Scalar { text, .. } => Json::String(text.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match &key.value {
                    Value::Scalar { text, .. } => text.clone(),
                    Value::Null => String::new(),
                    _ => continue,
                };
                map.insert(key, to_json(value));
            }
            Json::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflows_read_as_json_text() {
        let text = "on:\n  workflow_dispatch:\n    inputs:\n      n: { type: number, default: 3 }\njobs:\n  run:\n    runs-on: pipewright\n    env: { PIPEWRIGHT_PIPELINE: deploy }\n    steps:\n      - name: pipewright\n      -\n";
        let json = yaml_to_json(text).unwrap();
        assert_eq!(
            json["on"]["workflow_dispatch"]["inputs"]["n"]["default"],
            "3"
        );
        assert_eq!(json["jobs"]["run"]["env"]["PIPEWRIGHT_PIPELINE"], "deploy");
        assert_eq!(json["jobs"]["run"]["steps"][1], Json::Null);
        assert_eq!(yaml_to_json("").unwrap(), Json::Null);
        let err = yaml_to_json("a: [").unwrap_err();
        assert!(err.contains("invalid YAML"), "{err}");
    }
}
