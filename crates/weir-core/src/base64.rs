//! Base64 (RFC 4648), standard and URL-safe: what Secrets, `b64enc`/`b64dec` and the secret
//! masks need, without a dependency.

/// The standard alphabet.
pub const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// The URL- and file-name-safe alphabet.
pub const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `bytes` in `alphabet`, padded with `=` to a multiple of four characters if `pad`.
pub fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Either alphabet, padded or not, whitespace ignored, decoded to UTF-8 text.
pub fn decode(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => continue,
            _ => return None,
        } as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_both_alphabets() {
        assert_eq!(encode(b"hello", STD, true), "aGVsbG8=");
        assert_eq!(encode(b"hi?>", URL, false), "aGk_Pg");
        assert_eq!(encode(b"", STD, true), "");
        for text in ["", "a", "ab", "abc", "hi?>", "p@ss word\n"] {
            for (alphabet, pad) in [(STD, true), (STD, false), (URL, false)] {
                let e = encode(text.as_bytes(), alphabet, pad);
                assert_eq!(decode(&e).as_deref(), Some(text), "{e}");
            }
        }
        assert_eq!(decode("aGVs\nbG8="), Some("hello".into()));
        assert_eq!(decode("a*b"), None);
    }
}
