//! One connection to SQLite or PostgreSQL behind one small interface, so every query of the
//! store is written once. SQL text uses SQLite's `?N` placeholders; for PostgreSQL they become
//! `$N`, and each distinct text is prepared once per connection. Integers are BIGINT on
//! PostgreSQL, so an `i64` binds to every integer column of both schemas.

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::OptionalExtension;

use crate::{Error, Result};

/// A bound parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum P<'a> {
    Null,
    I(i64),
    T(&'a str),
    /// Arrays, for PostgreSQL's `unnest` only.
    IA(&'a [i64]),
    TA(&'a [&'a str]),
}

impl From<i64> for P<'_> {
    fn from(v: i64) -> Self {
        P::I(v)
    }
}
impl From<bool> for P<'_> {
    fn from(v: bool) -> Self {
        P::I(v as i64)
    }
}
impl From<u16> for P<'_> {
    fn from(v: u16) -> Self {
        P::I(v as i64)
    }
}
impl From<u32> for P<'_> {
    fn from(v: u32) -> Self {
        P::I(v as i64)
    }
}
impl<'a> From<&'a str> for P<'a> {
    fn from(v: &'a str) -> Self {
        P::T(v)
    }
}
impl<'a> From<&'a String> for P<'a> {
    fn from(v: &'a String) -> Self {
        P::T(v)
    }
}
impl<'a, T: Into<P<'a>>> From<Option<T>> for P<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(P::Null, Into::into)
    }
}
impl<'a> From<&'a Option<String>> for P<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(P::Null, P::T)
    }
}

/// `p![a, b]`: parameters of a query.
macro_rules! p {
    ($($e:expr),* $(,)?) => { &[$($crate::db::P::from($e)),*][..] };
}
pub(crate) use p;

impl rusqlite::ToSql for P<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            P::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            P::I(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            P::T(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            P::IA(_) | P::TA(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "arrays are bound on PostgreSQL only".into(),
                ));
            }
        })
    }
}

impl postgres::types::ToSql for P<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use postgres::types::{IsNull, Type};
        match self {
            P::Null => Ok(IsNull::Yes),
            P::I(i) => match *ty {
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            P::T(s) => s.to_sql(ty, out),
            P::IA(a) => a.to_sql(ty, out),
            P::TA(a) => a.to_sql(ty, out),
        }
    }
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

/// A column value read back.
#[derive(Debug, Clone)]
pub(crate) enum V {
    Null,
    I(i64),
    T(String),
}

/// One result row.
#[derive(Debug, Clone)]
pub(crate) struct Row(Vec<V>);

impl Row {
    pub fn get(&self, at: usize) -> Option<&V> {
        self.0.get(at)
    }
    pub fn i(&self, at: usize) -> Result<i64> {
        match self.0.get(at) {
            Some(V::I(i)) => Ok(*i),
            other => Err(Error::Corrupt(format!(
                "column {at}: expected an integer, found {other:?}"
            ))),
        }
    }
    pub fn oi(&self, at: usize) -> Result<Option<i64>> {
        match self.0.get(at) {
            Some(V::Null) => Ok(None),
            _ => self.i(at).map(Some),
        }
    }
    pub fn s(&self, at: usize) -> Result<String> {
        match self.0.get(at) {
            Some(V::T(s)) => Ok(s.clone()),
            other => Err(Error::Corrupt(format!(
                "column {at}: expected text, found {other:?}"
            ))),
        }
    }
    pub fn os(&self, at: usize) -> Result<Option<String>> {
        match self.0.get(at) {
            Some(V::Null) => Ok(None),
            _ => self.s(at).map(Some),
        }
    }
}

pub(crate) struct PgConn {
    client: postgres::Client,
    prepared: HashMap<String, postgres::Statement>,
}

pub(crate) enum Conn {
    Lite(rusqlite::Connection),
    Pg(Box<RefCell<PgConn>>),
}

/// `?N` → `$N` (the store's SQL has no `?` inside string literals).
fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$")
}

impl PgConn {
    pub fn client_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }

    fn stmt(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&pg_sql(sql))?;
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn pg_params<'a>(p: &'a [P<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    p.iter()
        .map(|x| x as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn pg_row(r: &postgres::Row) -> Result<Row> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(V::I),
            Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(|x| V::I(x.into())),
            Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(|x| V::I(x.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(|x| V::I(x.into())),
            _ => r.try_get::<_, Option<String>>(i)?.map(V::T),
        };
        out.push(v.unwrap_or(V::Null));
    }
    Ok(Row(out))
}

fn lite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let n = r.as_ref().column_count();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => V::Null,
            ValueRef::Integer(x) => V::I(x),
            ValueRef::Real(x) => V::I(x as i64),
            ValueRef::Text(t) | ValueRef::Blob(t) => V::T(String::from_utf8_lossy(t).into_owned()),
        });
    }
    Ok(Row(out))
}

impl Conn {
    pub fn pg(client: postgres::Client) -> Conn {
        Conn::Pg(Box::new(RefCell::new(PgConn {
            client,
            prepared: HashMap::new(),
        })))
    }

    /// Whether the connection is gone (PostgreSQL closed it, or the network did): a pool drops
    /// such a connection rather than handing it out again.
    pub fn is_broken(&self) -> bool {
        match self {
            Conn::Pg(c) => c.borrow().client.is_closed(),
            _ => false,
        }
    }

    pub fn is_pg(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    /// Runs a statement; returns the number of rows it changed.
    pub fn exec(&self, sql: &str, p: &[P<'_>]) -> Result<usize> {
        match self {
            Conn::Lite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(p.iter()))?),
            Conn::Pg(c) => {
                let mut c = c.borrow_mut();
                let s = c.stmt(sql)?;
                Ok(c.client.execute(&s, &pg_params(p))? as usize)
            }
        }
    }

    pub fn rows(&self, sql: &str, p: &[P<'_>]) -> Result<Vec<Row>> {
        match self {
            Conn::Lite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(p.iter()), lite_row)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            Conn::Pg(c) => {
                let mut c = c.borrow_mut();
                let s = c.stmt(sql)?;
                c.client
                    .query(&s, &pg_params(p))?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
        }
    }

    /// [`Conn::rows`] for SQL built at run time (not kept prepared on PostgreSQL).
    pub fn rows_uncached(&self, sql: &str, p: &[P<'_>]) -> Result<Vec<Row>> {
        match self {
            Conn::Lite(_) => self.rows(sql, p),
            Conn::Pg(c) => c
                .borrow_mut()
                .client
                .query(&pg_sql(sql), &pg_params(p))?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    pub fn row(&self, sql: &str, p: &[P<'_>]) -> Result<Option<Row>> {
        match self {
            Conn::Lite(c) => Ok(c
                .prepare_cached(sql)?
                .query_row(rusqlite::params_from_iter(p.iter()), lite_row)
                .optional()?),
            Conn::Pg(_) => Ok(self.rows(sql, p)?.into_iter().next()),
        }
    }

    /// Runs several statements without parameters (DDL).
    pub fn batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Lite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(c) => Ok(c.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// Runs `f` in a write transaction (SQLite: `BEGIN IMMEDIATE`, so the write lock is taken
    /// first); rolled back if `f` fails.
    pub fn tx<T>(&self, f: impl FnOnce(&Conn) -> Result<T>) -> Result<T> {
        self.exec(
            if self.is_pg() {
                "BEGIN"
            } else {
                "BEGIN IMMEDIATE"
            },
            &[],
        )?;
        match f(self) {
            Ok(v) => {
                self.exec("COMMIT", &[])?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}
