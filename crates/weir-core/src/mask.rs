//! What to mask when a secret may be shown: the value, each of its lines (logs are read and
//! masked line by line, so a PEM key would otherwise print whole), and the encodings it is
//! commonly printed in (base64, URL encoding, a JSON string). Masking is a safety net for
//! honest mistakes, not a boundary: a task that wants to print a secret it can read can always
//! transform it first.

use crate::base64;

/// The strings to mask for the secret `values`, longest first (a longer form is masked before a
/// shorter one it contains). Values and lines shorter than 3 bytes are left out: masking every
/// `a` in a log would hide everything and protect nothing.
pub fn forms<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        if v.len() < 3 {
            continue;
        }
        out.push(v.to_string());
        if v.contains('\n') {
            out.extend(
                v.lines()
                    .map(|l| l.trim_end_matches('\r').trim())
                    .filter(|l| l.len() >= 3)
                    .map(str::to_string),
            );
        }
        out.push(base64::encode(v.as_bytes(), base64::STD, true));
        out.push(base64::encode(v.as_bytes(), base64::STD, false));
        out.push(base64::encode(v.as_bytes(), base64::URL, false));
        out.push(percent(v));
        let json = serde_json::to_string(v).unwrap_or_default();
        out.push(json[1..json.len().saturating_sub(1).max(1)].to_string());
    }
    out.retain(|s| s.len() >= 3);
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn percent(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_cover_lines_and_encodings() {
        let pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----\n";
        let f = forms([pem, "p@ss word", "ab"]);
        for want in [
            pem,
            "MIIBOgIBAAJBAKj34GkxFhD9",
            "-----END KEY-----",
            "p@ss word",
            "cEBzcyB3b3Jk",
            "p%40ss%20word",
            "-----BEGIN KEY-----\\nMIIBOgIBAAJBAKj34GkxFhD9\\n-----END KEY-----\\n",
        ] {
            assert!(f.iter().any(|x| x == want), "{want:?} not in {f:?}");
        }
        assert!(!f.iter().any(|x| x == "ab"));
        assert!(f.windows(2).all(|w| w[0].len() >= w[1].len()));
    }
}
