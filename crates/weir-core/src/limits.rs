//! Bounds on what one workflow may make the engine build. Every limit is checked where the
//! thing is made (a node, a loop's items, an expression's value, a YAML alias's expansion), so a
//! small file cannot make the engine allocate without bound or recurse off its stack. A limit
//! hit while a run starts is a validation problem (the run is refused before it is stored); one
//! hit later fails the node that hit it.

/// Nodes one run may create (retries and loop members included).
pub const MAX_NODES: usize = 200_000;
/// Templates nested within one another without a task finishing in between: a template that
/// calls itself unconditionally would otherwise recurse until the stack overflows. Argo's
/// controller stops at the same depth ("Maximum recursion depth exceeded").
pub const MAX_DEPTH: usize = 100;
/// Items of one loop (`withItems`, `withParam`, `withSequence`).
pub const MAX_LOOP_ITEMS: usize = 100_000;
/// Bytes of one string an expression makes (`sprig.repeat`, `+`, `join`…).
pub const MAX_TEXT: usize = 4 << 20;
/// Items of one list an expression makes (`a..b`, `+` of lists, `split`…): no more than a loop
/// may take.
pub const MAX_LIST: usize = MAX_LOOP_ITEMS;
/// YAML nodes that aliases (`*anchor`) may add to one stream, counted as expanded.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// The limits a run is held to; [`Limits::default`] is the constants above. Smaller ones suit
/// a server that wants to refuse big runs early (and the fuzzer, which wants many cases fast).
/// A run must be replayed with the limits it ran with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_nodes: usize,
    pub max_depth: usize,
    pub max_loop_items: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_nodes: MAX_NODES,
            max_depth: MAX_DEPTH,
            max_loop_items: MAX_LOOP_ITEMS,
        }
    }
}

const MARK: &str = "exceeds the limit of";

/// The message of a limit that was hit: names the limit and what hit it.
pub fn exceeded(what: &str, have: usize, max: usize) -> String {
    format!("{what}: {have} {MARK} {max}")
}

/// Whether `message` (a node's, perhaps with context around it) says a limit was hit.
pub fn is_exceeded(message: &str) -> bool {
    message.contains(MARK)
}

/// The longest duration a workflow may give (timeouts, deadlines, backoffs, suspensions, cache
/// ages, TTLs): 100 years. Durations become milliseconds since the epoch in an `i64`; a bigger
/// one is a mistake, refused rather than wrapped, and a computed one (a backoff) is capped.
pub const MAX_DURATION_MS: i64 = 100 * 365 * 86_400_000;
/// The largest `retryStrategy.backoff.factor`: the delay multiplies by it on each retry.
pub const MAX_BACKOFF_FACTOR: f64 = 1_000.0;

/// `Err` says why `ms` milliseconds is too long a duration.
pub fn check_duration_ms(ms: i64) -> Result<i64, String> {
    if ms > MAX_DURATION_MS {
        Err("longer than 100 years, the longest duration weir takes".into())
    } else {
        Ok(ms)
    }
}

/// `Err` says why `secs` seconds is too long a duration.
pub fn check_seconds(secs: i64) -> Result<i64, String> {
    check_duration_ms(secs.saturating_mul(1000))
}

/// `Err` says why `factor` cannot be a backoff factor.
pub fn check_factor(factor: f64) -> Result<f64, String> {
    if factor.is_finite() && factor <= MAX_BACKOFF_FACTOR {
        Ok(factor)
    } else {
        Err(format!(
            "`{factor}` is not a factor: it must be a number of at most {MAX_BACKOFF_FACTOR}"
        ))
    }
}
