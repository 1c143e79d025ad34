//! `synchronization`: the mutexes and semaphores a template or a whole workflow needs before it
//! starts. Locks are shared by every run on the same store (the store keeps the queues; the
//! state machine only asks, waits for `Event::Acquired`, and releases).
//!
//! Lock keys follow Argo's: `NAMESPACE/Mutex/NAME`, `NAMESPACE/ConfigMap/CM/KEY` for a semaphore
//! whose limit is a ConfigMap value, and `NAMESPACE/Database/...` for the database variants
//! (their limits live in the store: `weir sync limit KEY N`).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value as Json;

use super::Lock;
use crate::subst::substitute;

/// The locks `sync` (a `synchronization` object) asks for. `{{…}}` in names and keys are
/// resolved with `vars`; semaphore limits from ConfigMaps are read from `config_maps`.
pub(crate) fn locks(
    sync: &Json,
    namespace: &str,
    vars: &super::vars::Vars,
    config_maps: &HashMap<String, BTreeMap<String, String>>,
) -> Result<Vec<Lock>, String> {
    let text = |v: Option<&Json>, what: &str| -> Result<String, String> {
        let s = v
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("synchronization: {what} is required"))?;
        substitute(s, vars).map_err(|e| format!("synchronization: {what}: {}", e.0))
    };
    let mut out = Vec::new();
    for (_, m) in entries(sync, "mutex", "mutexes") {
        let name = text(m.get("name"), "mutex name")?;
        let ns = match m.get("namespace").and_then(Json::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => namespace.to_string(),
        };
        let database = m.get("database").and_then(Json::as_bool) == Some(true);
        out.push(Lock {
            key: if database {
                format!("{ns}/Database/Mutex/{name}")
            } else {
                format!("{ns}/Mutex/{name}")
            },
            limit: Some(1),
        });
    }
    for (_, s) in entries(sync, "semaphore", "semaphores") {
        if let Some(r) = s.get("configMapKeyRef") {
            let cm = text(r.get("name"), "semaphore configMapKeyRef.name")?;
            let key = text(r.get("key"), "semaphore configMapKeyRef.key")?;
            let value = config_maps
                .get(&cm)
                .ok_or_else(|| {
                    format!("semaphore limit: ConfigMap `{cm}` not found (pass it with --with)")
                })?
                .get(&key)
                .ok_or_else(|| format!("semaphore limit: ConfigMap `{cm}` has no key `{key}`"))?;
            let limit = value.trim().parse::<u32>().map_err(|_| {
                format!("semaphore limit: ConfigMap `{cm}` key `{key}` is `{value}`, not a count")
            })?;
            out.push(Lock {
                key: format!("{namespace}/ConfigMap/{cm}/{key}"),
                limit: Some(limit),
            });
        } else if let Some(d) = s.get("database") {
            let key = text(d.get("key"), "semaphore database.key")?;
            out.push(Lock {
                key: format!("{namespace}/Database/{key}"),
                limit: None,
            });
        } else {
            return Err(
                "synchronization: a semaphore needs `configMapKeyRef` or `database`".into(),
            );
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    Ok(out)
}

/// The single (`mutex`) and listed (`mutexes`) entries of a `synchronization` object, each with
/// its field path below it (`mutex`, `mutexes[1]`).
pub(crate) fn entries<'a>(sync: &'a Json, one: &str, many: &str) -> Vec<(String, &'a Json)> {
    let mut out: Vec<(String, &Json)> = sync
        .get(one)
        .map(|m| (one.to_string(), m))
        .into_iter()
        .collect();
    for (i, m) in sync
        .get(many)
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        out.push((format!("{many}[{i}]"), m));
    }
    out
}

/// What a node or run shows while it waits.
pub(crate) fn waiting_message(locks: &[Lock]) -> String {
    let keys: Vec<&str> = locks.iter().map(|l| l.key.as_str()).collect();
    format!("Waiting for lock: {}", keys.join(", "))
}
