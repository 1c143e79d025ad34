//! Loading workflow files: YAML/JSON documents → checked against Argo's own JSON schema (every
//! problem reported at once, with file:line:column and field path) → the typed model.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::diag::{Diags, Pos};
use crate::spec::{CronSpec, DataMap, Definition, Kind, ObjectMeta, WorkflowSpec};
use crate::yaml::{self, Node, Yaml};

/// Everything found in one file.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    pub definitions: Vec<Definition>,
    pub config_maps: Vec<DataMap>,
    pub secrets: Vec<DataMap>,
    /// Documents of other kinds: (kind, position).
    pub skipped: Vec<(String, Pos)>,
}

/// Fields weir adds to Argo's schema, kept as written.
const WEIR_EXTENSIONS: &[&str] = &[
    // `archive: {zstd: {level}}`: tar+zstd archives
    ".archive.zstd",
];

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut s: Value = serde_json::from_str(include_str!("argo-schema.json"))
            .expect("embedded schema is valid JSON");
        // a CronWorkflow's deprecated `schedule` (one schedule), which Argo still accepts and
        // many files still use: allowed beside `schedules`, one of the two required (below)
        if let Some(cron) =
            s.pointer_mut("/definitions/io.argoproj.workflow.v1alpha1.CronWorkflowSpec")
        {
            cron["properties"]["schedule"] = serde_json::json!({"type": "string"});
            cron["required"] = serde_json::json!(["workflowSpec"]);
        }
        s
    })
}

fn definition(name: &str) -> Option<&'static Value> {
    schema().get("definitions")?.get(name)
}

const ARGO: &str = "io.argoproj.workflow.v1alpha1.";

/// Parses and checks every document of a file. Problems go to `diags`; documents with errors
/// are left out of the result.
pub fn load_str(src: &str, diags: &mut Diags) -> Loaded {
    let mut out = Loaded::default();
    let docs = match yaml::parse_documents(src) {
        Ok(d) => d,
        Err(e) => {
            diags.error(e.pos, "", format!("invalid YAML: {}", e.message));
            return out;
        }
    };
    for doc in &docs {
        load_doc(doc, diags, &mut out);
    }
    out
}

fn load_doc(doc: &Node, diags: &mut Diags, out: &mut Loaded) {
    if !matches!(doc.value, Yaml::Map(_)) {
        diags.error(
            doc.pos,
            "",
            "a document must be a mapping with `kind`, `metadata` and `spec`",
        );
        return;
    }
    let Some(kind_node) = doc.get("kind") else {
        diags.error(doc.pos, "kind", "missing field `kind`");
        return;
    };
    let kind_str = kind_node.as_str().unwrap_or_default();
    match kind_str {
        "ConfigMap" | "Secret" => {
            if let Some(m) = load_data_map(doc, kind_str == "Secret", diags) {
                if kind_str == "Secret" {
                    out.secrets.push(m)
                } else {
                    out.config_maps.push(m)
                }
            }
            return;
        }
        _ => {}
    }
    let Some(kind) = Kind::parse(kind_str) else {
        out.skipped.push((kind_str.to_string(), doc.pos));
        return;
    };
    let before = diags
        .items
        .iter()
        .filter(|d| d.severity == crate::diag::Severity::Error)
        .count();
    let root = Value::String(format!("#/definitions/{ARGO}{}", kind.as_str()));
    let mut conv = Converter {
        diags,
        positions: BTreeMap::new(),
    };
    let json = conv.convert(
        doc,
        &Value::Object(Map::from_iter([("$ref".to_string(), root)])),
        "",
    );
    let positions = conv.positions;
    let after = diags
        .items
        .iter()
        .filter(|d| d.severity == crate::diag::Severity::Error)
        .count();
    if after > before {
        return;
    }
    let pos_of = |path: &str| {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = positions.get(&p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return doc.pos,
            }
        }
    };
    let positions = positions.clone();
    let metadata: ObjectMeta = match typed(&json, "metadata") {
        Ok(m) => m,
        Err((path, msg)) => return diags.error(pos_of(&path), &path, msg),
    };
    let spec_key = if kind == Kind::CronWorkflow {
        "spec.workflowSpec"
    } else {
        "spec"
    };
    let spec: WorkflowSpec = match typed(&json, spec_key) {
        Ok(s) => s,
        Err((path, msg)) => return diags.error(pos_of(&path), &path, msg),
    };
    let cron = if kind == Kind::CronWorkflow {
        match typed::<CronSpec>(&json, "spec") {
            Ok(c) if c.schedules.is_empty() && c.schedule.as_deref().is_none_or(str::is_empty) => {
                return diags.error(
                    pos_of("spec"),
                    "spec.schedules",
                    "missing required field `schedules` (or the deprecated `schedule`)",
                );
            }
            Ok(c) => Some(c),
            Err((path, msg)) => return diags.error(pos_of(&path), &path, msg),
        }
    } else {
        None
    };
    out.definitions.push(Definition {
        kind,
        metadata,
        spec,
        cron,
        pos: doc.pos,
        file: diags.file.clone(),
        positions: std::sync::Arc::new(positions),
    });
}

fn typed<T: serde::de::DeserializeOwned + Default>(
    json: &Value,
    path: &str,
) -> Result<T, (String, String)> {
    let mut v = json;
    for part in path.split('.') {
        match v.get(part) {
            Some(x) => v = x,
            None => return Ok(T::default()),
        }
    }
    T::deserialize(v).map_err(|e| (path.to_string(), e.to_string()))
}

fn load_data_map(doc: &Node, secret: bool, diags: &mut Diags) -> Option<DataMap> {
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str);
    let Some(name) = name else {
        diags.error(doc.pos, "metadata.name", "missing field `name`");
        return None;
    };
    let mut data = BTreeMap::new();
    for (field, decode) in [("data", secret), ("stringData", false)] {
        let Some(node) = doc.get(field) else { continue };
        let Yaml::Map(entries) = &node.value else {
            diags.error(node.pos, field, "expected a mapping of strings");
            continue;
        };
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default().to_string();
            let path = format!("{field}.{key}");
            let text = match &v.value {
                Yaml::Scalar(s, _) => s.clone(),
                Yaml::Null => String::new(),
                _ => {
                    diags.error(v.pos, &path, "expected a string");
                    continue;
                }
            };
            let text = if decode {
                match crate::base64::decode(&text) {
                    Some(t) => t,
                    None => {
                        diags.error(
                            v.pos,
                            &path,
                            "Secret data must be base64 (use stringData for plain text)",
                        );
                        continue;
                    }
                }
            } else {
                text
            };
            data.insert(key, text);
        }
    }
    Some(DataMap {
        name: name.to_string(),
        data,
    })
}

struct Converter<'a> {
    diags: &'a mut Diags,
    positions: BTreeMap<String, Pos>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Converter<'_> {
    /// Converts `node` to JSON guided by `schema`, reporting every mismatch.
    fn convert(&mut self, node: &Node, schema: &Value, path: &str) -> Value {
        self.positions.insert(path.to_string(), node.pos);
        let schema = resolve(schema);
        let ty = schema.get("type").and_then(Value::as_str);
        if let Yaml::Null = node.value {
            return Value::Null;
        }
        match ty {
            Some("object") => self.object(node, schema, path),
            Some("array") => match &node.value {
                Yaml::Seq(items) => {
                    let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
                    Value::Array(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, it)| self.convert(it, &item_schema, &format!("{path}[{i}]")))
                            .collect(),
                    )
                }
                _ => self.mismatch(node, path, "a list"),
            },
            Some("string") => match &node.value {
                Yaml::Scalar(s, _) => {
                    if let Some(c) = schema.get("const").and_then(Value::as_str)
                        && c != s
                    {
                        self.diags
                            .error(node.pos, path, format!("must be `{c}`, found `{s}`"));
                    }
                    Value::String(s.clone())
                }
                _ => self.mismatch(node, path, "a string"),
            },
            Some("integer") => match &node.value {
                Yaml::Scalar(s, _) => match yaml::parse_int(s) {
                    Some(i) => Value::from(i),
                    None => self.mismatch(node, path, "an integer"),
                },
                _ => self.mismatch(node, path, "an integer"),
            },
            Some("number") => match &node.value {
                Yaml::Scalar(s, _) => {
                    match s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                        Some(n) => Value::Number(n),
                        None => self.mismatch(node, path, "a number"),
                    }
                }
                _ => self.mismatch(node, path, "a number"),
            },
            Some("boolean") => match &node.value {
                Yaml::Scalar(s, _) => match yaml::resolve_plain(s) {
                    Value::Bool(b) => Value::Bool(b),
                    _ => self.mismatch(node, path, "true or false"),
                },
                _ => self.mismatch(node, path, "true or false"),
            },
            _ => yaml::to_json_untyped(node),
        }
    }

    fn object(&mut self, node: &Node, schema: &Value, path: &str) -> Value {
        let Yaml::Map(entries) = &node.value else {
            return self.mismatch(node, path, "a mapping");
        };
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let mut out = Map::new();
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                self.diags
                    .error(k.pos, path, "mapping keys must be strings");
                continue;
            };
            let child = join(path, key);
            if out.contains_key(key) {
                self.diags.error(k.pos, &child, "duplicate key");
                continue;
            }
            if let Some(p) = props.and_then(|p| p.get(key)) {
                let val = self.convert(v, p, &child);
                if !val.is_null() {
                    out.insert(key.to_string(), val);
                }
            } else if let Some(a) = additional {
                let val = if a.is_object() {
                    self.convert(v, a, &child)
                } else {
                    yaml::to_json_untyped(v)
                };
                out.insert(key.to_string(), val);
            } else if props.is_none() || WEIR_EXTENSIONS.iter().any(|e| child.ends_with(e)) {
                out.insert(key.to_string(), yaml::to_json_untyped(v));
            } else {
                self.diags.warning(k.pos, &child, "unknown field (ignored)");
            }
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !out.contains_key(r) {
                    self.diags.error(
                        node.pos,
                        &join(path, r),
                        format!("missing required field `{r}`"),
                    );
                }
            }
        }
        Value::Object(out)
    }

    fn mismatch(&mut self, node: &Node, path: &str, expected: &str) -> Value {
        let found = match &node.value {
            Yaml::Null => "null",
            Yaml::Scalar(..) => "a scalar",
            Yaml::Seq(_) => "a list",
            Yaml::Map(_) => "a mapping",
        };
        self.diags.error(
            node.pos,
            path,
            format!("expected {expected}, found {found}"),
        );
        Value::Null
    }
}

fn resolve(mut schema: &Value) -> &Value {
    for _ in 0..16 {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => match definition(r.rsplit('/').next().unwrap_or_default()) {
                Some(d) => schema = d,
                None => return &Value::Null,
            },
            None => break,
        }
    }
    schema
}
