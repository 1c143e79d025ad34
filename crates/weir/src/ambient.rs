//! What the binary reads from the world that weir-core may not: the time, and randomness for
//! names and uids.

use weir_core::run::Millis;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// 64 random bits from the kernel (getrandom), falling back to the std hasher's per-process
/// random keys mixed with the time if that fails.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into our buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), 8, 0) };
    if n == 8 {
        return u64::from_le_bytes(buf);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A run's uid, Kubernetes-style (8-4-4-4-12 hex).
pub fn random_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// A random suffix for `generateName`, Kubernetes-style (5 of [a-z0-9]).
pub fn random_suffix() -> String {
    let mut n = random_u64();
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| {
            let c = A[(n % A.len() as u64) as usize] as char;
            n /= A.len() as u64;
            c
        })
        .collect()
}
