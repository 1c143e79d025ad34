//! Retries: attempts, backoff, policies and expressions.

use std::collections::BTreeMap;

use super::*;
use crate::expr::{self, Mode};
use crate::limits;
use crate::run::vars::Vars;
use crate::run::*;
use crate::subst::substitute;

pub(super) fn is_transient(msg: &str) -> bool {
    let m = msg.to_lowercase();
    [
        "lost",
        "connection reset",
        "timeout",
        "temporarily",
        "resource temporarily unavailable",
    ]
    .iter()
    .any(|p| m.contains(p))
}
impl Run {
    pub(super) fn next_attempt(&mut self, r: usize) {
        if self.stopping.is_some() {
            return;
        }
        let Rt::Retry(rt) = &mut self.rt[r] else {
            return;
        };
        let attempt = rt.attempts;
        rt.attempts += 1;
        let mut call = rt.call.clone();
        call.name = format!("{}({attempt})", call.name);
        call.display = format!("{}({attempt})", call.display);
        call.parent = Some(r);
        call.attempt = Some(attempt);
        call.link = Link::default();
        self.execute(call);
    }

    pub(super) fn retry_child_done(&mut self, r: usize, child: usize) {
        let c = self.nodes[child].clone();
        let Rt::Retry(rt) = &self.rt[r] else { return };
        let succeeded = c.phase.is_ok();
        let policy_ok = match rt.policy.as_str() {
            "Always" => true,
            "OnError" => c.phase == Phase::Error,
            "OnTransientError" => c.phase == Phase::Error && is_transient(&c.message),
            _ => c.phase == Phase::Failed,
        };
        let within_limit = rt.limit.is_none_or(|l| rt.attempts <= l);
        let started = self.nodes[r].started_at.unwrap_or(self.now);
        let mut delay = 0i64;
        let mut over_max = false;
        if let Some((dur, factor, max, cap)) = rt.backoff {
            // saturating (a float cast), then within the engine's clock
            let d = ((dur as f64 * factor.powi(rt.attempts.saturating_sub(1) as i32)) as i64)
                .min(limits::MAX_DURATION_MS);
            delay = cap.map_or(d, |c| d.min(c));
            over_max =
                max.is_some_and(|m| self.now.saturating_add(delay).saturating_sub(started) > m);
        }
        let expr_ok = match &rt.expression {
            None => true,
            Some(e) => {
                let mut vars = BTreeMap::new();
                vars.insert(
                    "lastRetry.exitCode".to_string(),
                    c.outputs
                        .exit_code
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "-1".into()),
                );
                vars.insert("lastRetry.status".to_string(), c.phase.as_str().to_string());
                vars.insert(
                    "lastRetry.duration".to_string(),
                    ((c.finished_at.unwrap_or(self.now) - c.started_at.unwrap_or(self.now)) / 1000)
                        .to_string(),
                );
                vars.insert("lastRetry.message".to_string(), c.message.clone());
                // `{{inputs.parameters.x}}` tags in the expression are the call's values
                let local = self.local_vars(&rt.call);
                let e = &substitute(
                    e,
                    &Vars {
                        layers: vec![&local, &self.globals],
                    },
                )
                .unwrap_or_else(|_| e.clone());
                expr::eval_bool(
                    e,
                    Mode::Expr,
                    &Vars {
                        layers: vec![&vars, &self.globals],
                    },
                )
                .unwrap_or(false)
            }
        };
        if succeeded
            || !policy_ok
            || !within_limit
            || over_max
            || !expr_ok
            || self.stopping.is_some()
        {
            let n = &mut self.nodes[r];
            n.outputs = c.outputs.clone();
            let msg = if !succeeded && !within_limit {
                format!("{} (no more retries left)", c.message)
            } else {
                c.message.clone()
            };
            self.finish_node(r, c.phase, if succeeded { String::new() } else { msg });
            return;
        }
        if delay > 0 {
            self.nodes[r].message = format!("Backoff for {}s", delay / 1000);
            self.arm(
                Timer::Backoff(self.nodes[r].id.clone()),
                self.now.saturating_add(delay),
            );
        } else {
            self.next_attempt(r);
        }
    }
}
