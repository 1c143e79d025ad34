//! A container's `securityContext`: whom it runs as and what it may do. Only an executor that
//! runs containers (Docker) applies it; the local executor runs tasks as its own task user.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a container's `securityContext` (and its pod's: the template's, then the workflow's
/// `securityContext`, for the fields a pod may set) asks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    /// The container must not run as root (its `runAsUser`, else its image's user).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_as_non_root: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
}

impl Security {
    /// From a container's `securityContext` and its pod's ones, nearest first (a template's,
    /// then the workflow's): `runAsUser`, `runAsGroup` and `runAsNonRoot` come from the
    /// nearest that sets them; `readOnlyRootFilesystem` and `privileged` from the container's.
    /// `Err`: the field path and what is wrong with its value.
    pub fn of(container: Option<&Value>, pods: &[Option<&Value>]) -> Result<Security, String> {
        let layers: Vec<(&str, &Value)> = container
            .map(|c| ("securityContext", c))
            .into_iter()
            .chain(pods.iter().flatten().map(|p| ("pod securityContext", *p)))
            .collect();
        let id = |field: &str| -> Result<Option<u32>, String> {
            for (at, v) in &layers {
                match v.get(field) {
                    None | Some(Value::Null) => continue,
                    Some(x) => {
                        return x
                            .as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .map(Some)
                            .ok_or_else(|| {
                                format!("{at}.{field}: `{x}` is not a user or group id (0 to 4294967295)")
                            });
                    }
                }
            }
            Ok(None)
        };
        let flag = |layers: &[(&str, &Value)], field: &str| -> Result<bool, String> {
            for (at, v) in layers {
                match v.get(field) {
                    None | Some(Value::Null) => continue,
                    Some(Value::Bool(b)) => return Ok(*b),
                    Some(x) => return Err(format!("{at}.{field}: `{x}` is not true or false")),
                }
            }
            Ok(false)
        };
        let own: Vec<_> = layers
            .iter()
            .filter(|(at, _)| *at == "securityContext" && container.is_some())
            .take(1)
            .cloned()
            .collect();
        Ok(Security {
            run_as_user: id("runAsUser")?,
            run_as_group: id("runAsGroup")?,
            run_as_non_root: flag(&layers, "runAsNonRoot")?,
            read_only_root_filesystem: flag(&own, "readOnlyRootFilesystem")?,
            privileged: flag(&own, "privileged")?,
        })
    }

    /// Whether it asks for anything.
    pub fn is_empty(&self) -> bool {
        *self == Security::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_nearest_context_wins_and_container_only_fields_stay_the_containers() {
        let c = json!({"runAsUser": 1000, "readOnlyRootFilesystem": true});
        let tmpl = json!({"runAsUser": 5, "runAsGroup": 2000, "privileged": true});
        let wf = json!({"runAsNonRoot": true, "runAsGroup": 7});
        let s = Security::of(Some(&c), &[Some(&tmpl), Some(&wf)]).unwrap();
        assert_eq!(
            s,
            Security {
                run_as_user: Some(1000),
                run_as_group: Some(2000),
                run_as_non_root: true,
                read_only_root_filesystem: true,
                // a pod's context has no `privileged`: only the container's counts
                privileged: false,
            }
        );
        assert!(Security::of(None, &[None]).unwrap().is_empty());
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = Security::of(Some(&json!({"runAsUser": -1})), &[]).unwrap_err();
        assert!(e.contains("securityContext.runAsUser"), "{e}");
        let e = Security::of(None, &[Some(&json!({"runAsNonRoot": "yes"}))]).unwrap_err();
        assert!(e.contains("pod securityContext.runAsNonRoot"), "{e}");
    }
}
