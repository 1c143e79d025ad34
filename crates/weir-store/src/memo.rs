//! Memoized outputs (`memoize`, the step cache), by cache and key.

use weir_core::run::Millis;

use crate::Result;
use crate::db::p;
use crate::store::Store;

impl Store {
    /// A memoized entry's outputs and the run that stored them, if younger than `max_age_ms`
    /// (any age if `None`).
    pub fn memo_entry(
        &self,
        cache: &str,
        key: &str,
        max_age_ms: Option<i64>,
        now: Millis,
    ) -> Result<Option<(String, String)>> {
        let Some(r) = self.conn.row(
            "SELECT outputs, created_at, run FROM memo WHERE cache = ?1 AND key = ?2",
            p![cache, key],
        )?
        else {
            return Ok(None);
        };
        let at = r.i(1)?;
        max_age_ms
            .is_none_or(|m| now - at <= m)
            .then(|| Ok((r.s(0)?, r.s(2)?)))
            .transpose()
    }

    pub fn memo_put(
        &mut self,
        cache: &str,
        key: &str,
        outputs: &str,
        now: Millis,
        run: &str,
    ) -> Result<()> {
        self.conn.exec(
            "INSERT INTO memo (cache, key, outputs, created_at, run) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(cache, key) DO UPDATE SET outputs = excluded.outputs, created_at = excluded.created_at, run = excluded.run",
            p![cache, key, outputs, now, run],
        )?;
        Ok(())
    }

    /// Memoized entries: (cache, key, created_at, run).
    pub fn memo_list(&self) -> Result<Vec<(String, String, Millis, String)>> {
        self.conn
            .rows(
                "SELECT cache, key, created_at, run FROM memo ORDER BY cache, key",
                p![],
            )?
            .iter()
            .map(|r| Ok((r.s(0)?, r.s(1)?, r.i(2)?, r.s(3)?)))
            .collect()
    }

    /// Deletes entries of `cache` (all of them, or one key). Returns how many.
    pub fn memo_delete(&mut self, cache: &str, key: Option<&str>) -> Result<usize> {
        match key {
            Some(k) => self.conn.exec(
                "DELETE FROM memo WHERE cache = ?1 AND key = ?2",
                p![cache, k],
            ),
            None => self
                .conn
                .exec("DELETE FROM memo WHERE cache = ?1", p![cache]),
        }
    }
}
