//! Names of runs, templates and namespaces, checked as Kubernetes checks them: a name is a
//! DNS-1123 subdomain (lowercase letters, digits, `-` and `.`, at most 253 characters, starting
//! and ending with a letter or digit), a namespace a DNS-1123 label (no `.`, at most 63). Names
//! become file names and URL path segments, so nothing else may reach them: no `/`, no `..`, no
//! NUL, no empty name.

/// The longest name (Kubernetes' limit for object names).
pub const MAX_NAME: usize = 253;
/// The longest namespace (a DNS-1123 label).
pub const MAX_NAMESPACE: usize = 63;
/// Names the local artifact repository keeps for itself (`artifacts/objects`, `artifacts/fetched`).
const RESERVED: &[&str] = &["objects", "fetched"];

/// `Err` says why `name` is not a valid run or template name.
pub fn check_name(name: &str) -> Result<(), String> {
    subdomain("name", name, name, MAX_NAME)?;
    if RESERVED.contains(&name) {
        return Err(format!("`{name}` is reserved"));
    }
    Ok(())
}

/// `Err` says why `key` is not a run's key: a name, or `NAMESPACE~NAME` (see
/// `Submission::key`).
pub fn check_key(key: &str) -> Result<(), String> {
    match key.split_once('~') {
        Some((ns, name)) => check_namespace(ns).and_then(|()| check_name(name)),
        None => check_name(key),
    }
}

/// `Err` says why `prefix` cannot start generated names (the prefix plus five characters).
pub fn check_generate_name(prefix: &str) -> Result<(), String> {
    // a prefix may end with `-` or `.`: checked as the shortest name it can start
    subdomain(
        "generateName",
        prefix,
        &format!("{prefix}x"),
        MAX_NAME - 5 + 1,
    )
}

/// `Err` says why `ns` is not a valid namespace.
pub fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.contains('.') {
        return Err(format!("namespace `{}` must not contain `.`", shown(ns)));
    }
    subdomain("namespace", ns, ns, MAX_NAMESPACE)
}

/// Whether `name` (the `what` given as `given`) is a DNS-1123 subdomain of at most `max`.
fn subdomain(what: &str, given: &str, name: &str, max: usize) -> Result<(), String> {
    let g = shown(given);
    if given.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > max {
        return Err(format!(
            "{what} `{}…` is {} characters, more than {}",
            shown(&given[..given.floor_char_boundary(40)]),
            given.len(),
            max - (name.len() - given.len())
        ));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok || !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return Err(format!(
            "{what} `{g}` is not a DNS-1123 subdomain: lowercase letters, digits, `-` and `.`, \
             starting and ending with a letter or digit"
        ));
    }
    // `a..b` is not a subdomain either (an empty label)
    if name.split('.').any(str::is_empty) {
        return Err(format!("{what} `{g}` has an empty label"));
    }
    Ok(())
}

/// A name as it may be shown in a message: control characters escaped.
fn shown(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "hello-world", "a.b", "x1", "1x", &"a".repeat(253)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "/etc",
            "a/b",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a\0",
            "objects",
            "fetched",
            &"a".repeat(254),
            "é",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generate_names_and_namespaces() {
        assert_eq!(check_generate_name("hello-"), Ok(()));
        assert_eq!(check_generate_name("a."), Ok(()));
        assert!(check_generate_name("").is_err());
        assert!(check_generate_name("../").is_err());
        assert!(check_generate_name(&"a".repeat(249)).is_err());
        assert_eq!(check_namespace("team-a"), Ok(()));
        for bad in ["a.b", "%61", "", "A", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
    }
}
