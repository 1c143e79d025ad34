//! Bearer tokens and roles. A token is `weir_ID_SECRET`: the id finds its row, the secret is
//! checked against the row's hash. Secrets are 256 random bits, not passwords, so a fast hash
//! is as strong as a slow one: new tokens store `blake3:HEX`, checked in constant time on the
//! request's thread. Tokens made before keep their argon2 hash and still work: those are
//! verified on a few dedicated threads, and a verified one is remembered (by its blake3) so that
//! later requests cost one row lookup, which still sees revocation and expiry.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::PasswordVerifier;
use weir_core::run::Millis;
use weir_store::{Store, TokenRecord};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// Who is calling: a verified token, or everyone on an `--insecure-local` server.
#[derive(Debug, Clone)]
pub enum Caller {
    Local,
    Token {
        id: String,
        namespace: String,
        role: Role,
    },
}

impl Caller {
    pub fn actor(&self) -> String {
        match self {
            Caller::Local => "local".into(),
            Caller::Token { id, .. } => format!("token:{id}"),
        }
    }

    /// Whether the caller holds at least `role` in `namespace`.
    pub fn allows(&self, namespace: &str, role: Role) -> bool {
        match self {
            Caller::Local => true,
            Caller::Token {
                namespace: ns,
                role: r,
                ..
            } => (ns == "*" || ns == namespace) && *r >= role,
        }
    }

    /// Whether the caller may act in every namespace (`*` tokens, a local server).
    pub fn is_global(&self, role: Role) -> bool {
        self.allows("*", role)
    }
}

/// Why a presented token was not accepted.
#[derive(Debug)]
pub enum Rejected {
    Malformed,
    Unknown,
    /// A known token id with the wrong secret.
    WrongSecret,
    /// An unverified secret from an address past its burst of wrong secrets.
    TooMany,
    Revoked,
    Expired,
    /// The token store could not be read (what went wrong, for the server's log).
    Unavailable(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejected::Malformed => "the bearer token is malformed",
            Rejected::Unknown | Rejected::WrongSecret => "the bearer token is not valid",
            Rejected::Revoked => "the bearer token has been revoked",
            Rejected::Expired => "the bearer token has expired",
            Rejected::TooMany => "too many wrong token secrets from this address; try again later",
            Rejected::Unavailable(_) => "the token store is unavailable; try again later",
        })
    }
}

/// Threads that run argon2 verifications (tokens hashed before `blake3:`): each takes ~19 MiB and a core for a moment, so a
/// burst of wrong secrets queues for these few threads rather than taking the server's memory
/// (run on the many request threads, each would leave its 19 MiB in its own malloc arena).
const HASHERS: usize = 2;

type Job = (String, String, std::sync::mpsc::Sender<bool>);

/// Verified secrets (by token id) and the threads that verify new ones.
#[derive(Default)]
pub struct Verified {
    known: Mutex<HashMap<String, [u8; 32]>>,
    hashers: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<Job>>>,
    failures: Failures,
}

impl Verified {
    /// Checks `token` against the store: the cheap checks first (form, unknown id, revoked,
    /// expired, a secret verified before), the hash last (an argon2 one on [`HASHERS`] threads). A client
    /// address (`from`) whose wrong secrets passed [`MAX_FAILURES`] in a window gets no more
    /// verifications until it ends; a secret verified before still works from there.
    pub fn check(
        &self,
        store: &Store,
        token: &str,
        now: Millis,
        from: Option<std::net::IpAddr>,
    ) -> Result<Caller, Rejected> {
        let (id, secret) = split(token).ok_or(Rejected::Malformed)?;
        let rec = store
            .token(id)
            .map_err(|e| Rejected::Unavailable(e.to_string()))?
            .ok_or(Rejected::Unknown)?;
        if rec.revoked_at.is_some() {
            return Err(Rejected::Revoked);
        }
        if rec.expires_at.is_some_and(|t| t <= now) {
            return Err(Rejected::Expired);
        }
        let digest = *blake3::hash(secret.as_bytes()).as_bytes();
        let known = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|d| *d == digest);
        if !known {
            if from.is_some_and(|a| self.failures.limited(a, now)) {
                return Err(Rejected::TooMany);
            }
            if !self.verify(secret, &rec.hash) {
                if let Some(a) = from {
                    self.failures.record(a, now);
                }
                return Err(Rejected::WrongSecret);
            }
            self.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_string(), digest);
        }
        let role = Role::parse(&rec.role).ok_or(Rejected::Unknown)?;
        Ok(Caller::Token {
            id: rec.id,
            namespace: rec.namespace,
            role,
        })
    }
}

impl Verified {
    /// Whether `secret` matches the stored `hash`: `blake3:HEX` compared in constant time, or an
    /// argon2 hash (tokens made before) checked on one of the [`HASHERS`] threads.
    fn verify(&self, secret: &str, hash: &str) -> bool {
        if let Some(hex) = hash.strip_prefix(FAST) {
            // blake3::Hash compares in constant time
            return blake3::Hash::from_hex(hex).is_ok_and(|h| h == blake3::hash(secret.as_bytes()));
        }
        let jobs = self.hashers.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let rx = std::sync::Arc::new(Mutex::new(rx));
            for n in 0..HASHERS {
                let rx = rx.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("weir-argon2-{n}"))
                    .spawn(move || {
                        loop {
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok((secret, hash, reply)) = job else {
                                return;
                            };
                            let ok = argon2::PasswordHash::new(&hash).is_ok_and(|h| {
                                Argon2::default()
                                    .verify_password(secret.as_bytes(), &h)
                                    .is_ok()
                            });
                            let _ = reply.send(ok);
                        }
                    });
            }
            Mutex::new(tx)
        });
        let (reply, answer) = std::sync::mpsc::channel();
        let sent = jobs.lock().unwrap_or_else(|e| e.into_inner()).send((
            secret.to_string(),
            hash.to_string(),
            reply,
        ));
        sent.is_ok() && answer.recv().unwrap_or(false)
    }
}

/// Wrong secrets per client address, in windows of [`FAILURE_WINDOW_MS`]: past
/// [`MAX_FAILURES`] in one window, the address's unverified secrets are refused (429) until
/// the window ends.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<std::net::IpAddr, (Millis, u32)>>);

pub const MAX_FAILURES: u32 = 20;
pub const FAILURE_WINDOW_MS: Millis = 10_000;

impl Failures {
    /// Whether `addr` has failed too often in its current window.
    pub fn limited(&self, addr: std::net::IpAddr, now: Millis) -> bool {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&addr)
            .is_some_and(|&(start, n)| now - start < FAILURE_WINDOW_MS && n >= MAX_FAILURES)
    }

    /// Counts one failure of `addr`.
    pub fn record(&self, addr: std::net::IpAddr, now: Millis) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // old windows go, so the map stays the size of the addresses failing now
        if m.len() > 10_000 {
            m.retain(|_, (start, _)| now - *start < FAILURE_WINDOW_MS);
        }
        let e = m.entry(addr).or_insert((now, 0));
        if now - e.0 >= FAILURE_WINDOW_MS {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("weir_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && secret.len() == 43 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((id, secret))
}

/// Random bytes from the kernel.
fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: getrandom writes at most the given length into our buffer.
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if r > 0 {
            filled += r as usize;
        }
    }
    buf
}

/// How a stored hash made by [`new_token`] begins.
const FAST: &str = "blake3:";

/// A new token: the record to store (with the secret's hash) and the token to show once.
pub fn new_token(
    namespace: &str,
    role: Role,
    description: &str,
    now: Millis,
    expires_at: Option<Millis>,
) -> anyhow::Result<(TokenRecord, String)> {
    let id: String = random::<6>().iter().map(|b| format!("{b:02x}")).collect();
    let secret = base64url(&random::<32>());
    let hash = format!("{FAST}{}", blake3::hash(secret.as_bytes()).to_hex());
    let token = format!("weir_{id}_{secret}");
    Ok((
        TokenRecord {
            id,
            namespace: namespace.to_string(),
            role: role.as_str().to_string(),
            hash,
            description: description.to_string(),
            created_at: now,
            expires_at,
            revoked_at: None,
        },
        token,
    ))
}

/// Unpadded base64url (32 bytes → 43 characters).
fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `30d`, `12h`, `15m`, `90s` → milliseconds.
pub fn parse_duration(s: &str) -> Option<Millis> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_the_store_and_revocation_and_expiry_refuse_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            Store::open(&dir.path().join("w.db"), weir_store::Durability::Process).unwrap();
        let (rec, token) = new_token("ml", Role::Editor, "ci", 1_000, Some(10_000)).unwrap();
        assert!(
            !rec.hash.contains(&token[17..]),
            "the secret itself is not stored"
        );
        store.create_token(&rec).unwrap();
        let v = Verified::default();
        match v.check(&store, &token, 2_000, None) {
            Ok(Caller::Token {
                namespace, role, ..
            }) => {
                assert_eq!((namespace.as_str(), role), ("ml", Role::Editor))
            }
            other => panic!("{other:?}"),
        }
        // a wrong secret with the right id is refused even after the right one was cached
        let mut wrong = token.clone();
        wrong.replace_range(token.len() - 3.., "AAA");
        assert!(matches!(
            v.check(&store, &wrong, 2_000, None),
            Err(Rejected::WrongSecret)
        ));
        // an unknown id is refused before any hash is computed
        let unknown = format!("weir_000000000000_{}", "A".repeat(43));
        assert!(matches!(
            v.check(&store, &unknown, 2_000, None),
            Err(Rejected::Unknown)
        ));
        assert!(matches!(
            v.check(&store, &token, 10_000, None),
            Err(Rejected::Expired)
        ));
        assert!(store.revoke_token(&rec.id, 3_000).unwrap());
        assert!(matches!(
            v.check(&store, &token, 2_000, None),
            Err(Rejected::Revoked)
        ));
        assert!(matches!(
            v.check(&store, "weir_x", 2_000, None),
            Err(Rejected::Malformed)
        ));
    }

    #[test]
    fn new_tokens_are_hashed_fast_and_tokens_hashed_with_argon2_still_work() {
        use argon2::password_hash::PasswordHasher;
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            Store::open(&dir.path().join("w.db"), weir_store::Durability::Process).unwrap();
        let (rec, token) = new_token("ml", Role::Viewer, "new", 1_000, None).unwrap();
        assert!(rec.hash.starts_with("blake3:"), "{}", rec.hash);
        store.create_token(&rec).unwrap();
        // a token made by an earlier weir: its row holds an argon2 hash of its secret
        let old_secret = base64url(&[7; 32]);
        let old = TokenRecord {
            id: "0123456789ab".into(),
            hash: Argon2::default()
                .hash_password_with_salt(old_secret.as_bytes(), &[1; 16])
                .unwrap()
                .to_string(),
            description: "old".into(),
            ..rec.clone()
        };
        store.create_token(&old).unwrap();
        let old_token = format!("weir_{}_{old_secret}", old.id);
        let v = Verified::default();
        for t in [&token, &old_token] {
            assert!(v.check(&store, t, 2_000, None).is_ok(), "{t}");
            let mut wrong = t.clone();
            wrong.replace_range(t.len() - 3.., "AAA");
            assert!(
                matches!(
                    v.check(&store, &wrong, 2_000, None),
                    Err(Rejected::WrongSecret)
                ),
                "{t}"
            );
        }
        // a stored hash that is neither is refused, never a panic
        for broken in ["blake3:zz", "blake3:", "$argon2id$nonsense", ""] {
            assert!(!v.verify(&token[18..], broken), "{broken}");
        }
    }

    #[test]
    fn roles_are_ordered_and_scoped_to_their_namespace() {
        let c = Caller::Token {
            id: "a".into(),
            namespace: "ml".into(),
            role: Role::Editor,
        };
        assert!(c.allows("ml", Role::Viewer) && c.allows("ml", Role::Editor));
        assert!(!c.allows("ml", Role::Admin) && !c.allows("other", Role::Viewer));
        assert!(!c.is_global(Role::Viewer));
        assert!(Caller::Local.allows("ml", Role::Admin) && Caller::Local.is_global(Role::Admin));
        assert_eq!(parse_duration("30d"), Some(30 * 86_400_000));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(base64url(&[0xff; 32]).len(), 43);
    }
}
