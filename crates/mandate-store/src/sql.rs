//! One SQL interface over the two databases the authority runs on: the
//! embedded SQLite file (the default) and PostgreSQL (several replicas on one
//! database).
//!
//! Statements are written once, in the common dialect, with numbered
//! parameters (`?1`, `?2`, …). For PostgreSQL they are rewritten once per
//! distinct text and cached: `?N` becomes `$N`, and the few functions the two
//! spell differently are translated ([`translate`]). Parameters are values
//! ([`Value`]) converted to whatever type PostgreSQL inferred for each
//! placeholder, so an integer compared with a `BIGINT` column and a flag
//! stored as `0`/`1` work the same on both.

use std::collections::HashMap;
use std::sync::Mutex;

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded SQLite file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("{}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    /// `query_row` found no row.
    #[error("no row")]
    NoRows,
    /// A column did not hold what the code reads it as.
    #[error("column {index}: {message}")]
    Type {
        /// The column.
        index: usize,
        /// What was wrong.
        message: String,
    },
}

/// PostgreSQL's own message (the driver's `Display` says only "db error").
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {} ({})", d.severity(), d.message(), d.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

impl Error {
    /// Whether the statement broke a uniqueness (primary key) constraint.
    #[must_use]
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }

    /// Whether the database could not be reached (as opposed to refusing a
    /// statement).
    #[must_use]
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Error::Postgres(e) if e.is_closed() || e.code().is_none())
    }
}

/// A statement result.
pub type Result<T> = std::result::Result<T, Error>;

/// A parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// A flag.
    Bool(bool),
}

/// What can be passed as a parameter.
pub trait ToValue {
    /// This as a value.
    fn to_value(&self) -> Value;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// Parameters for a statement: `params![a, b, c]`.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::sql::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::sql::ToValue),+] as &[&dyn $crate::sql::ToValue]
    };
}
pub use crate::params;

/// What a column can be read as.
pub trait FromValue: Sized {
    /// From a column's value (`None` for `NULL`).
    ///
    /// # Errors
    /// When the value is not of this type.
    fn from_value(v: Value) -> std::result::Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(i),
            Value::Bool(b) => Ok(i64::from(b)),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(b),
            Value::Int(i) => Ok(i != 0),
            other => Err(format!("expected a flag, found {other:?}")),
        }
    }
}
impl FromValue for String {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A column's position.
pub trait ColumnIndex {
    /// From 0.
    fn index(self) -> usize;
}
impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}
impl ColumnIndex for i32 {
    fn index(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

/// One row of a result.
#[allow(
    missing_debug_implementations,
    reason = "a borrowed row of either library"
)]
pub enum Row<'a> {
    /// From SQLite.
    Sqlite(&'a rusqlite::Row<'a>),
    /// From PostgreSQL.
    Postgres(&'a postgres::Row),
}

impl Row<'_> {
    /// Column `index` (from 0) as `T`. (The first type parameter mirrors
    /// the index types other SQL libraries take; only `usize` is used.)
    ///
    /// # Errors
    /// When the column is missing or not a `T`.
    pub fn get<I: ColumnIndex, T: FromValue>(&self, index: I) -> Result<T> {
        let index = index.index();
        let v = self.value(index)?;
        T::from_value(v).map_err(|message| Error::Type { index, message })
    }

    fn value(&self, index: usize) -> Result<Value> {
        match self {
            Row::Sqlite(r) => Ok(match r.get_ref(index)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(i) => Value::Int(i),
                rusqlite::types::ValueRef::Real(f) => Value::Text(f.to_string()),
                rusqlite::types::ValueRef::Text(t) => {
                    Value::Text(String::from_utf8_lossy(t).into_owned())
                }
                rusqlite::types::ValueRef::Blob(_) => {
                    return Err(Error::Type {
                        index,
                        message: "a blob".into(),
                    });
                }
            }),
            Row::Postgres(r) => {
                use postgres::types::Type;
                let ty = r
                    .columns()
                    .get(index)
                    .map(|c| c.type_().clone())
                    .ok_or(Error::Type {
                        index,
                        message: "no such column".into(),
                    })?;
                Ok(if ty == Type::INT8 {
                    r.try_get::<_, Option<i64>>(index)?
                        .map_or(Value::Null, Value::Int)
                } else if ty == Type::INT4 {
                    r.try_get::<_, Option<i32>>(index)?
                        .map_or(Value::Null, |i| Value::Int(i64::from(i)))
                } else if ty == Type::INT2 {
                    r.try_get::<_, Option<i16>>(index)?
                        .map_or(Value::Null, |i| Value::Int(i64::from(i)))
                } else if ty == Type::BOOL {
                    r.try_get::<_, Option<bool>>(index)?
                        .map_or(Value::Null, Value::Bool)
                } else if ty == Type::NUMERIC {
                    // COUNT(*) and SUM() over BIGINT are NUMERIC/INT8; read
                    // NUMERIC as its text.
                    return Err(Error::Type {
                        index,
                        message: "NUMERIC: cast it to BIGINT in the query".into(),
                    });
                } else {
                    r.try_get::<_, Option<String>>(index)?
                        .map_or(Value::Null, Value::Text)
                })
            }
        }
    }
}

/// Makes `query_row`'s "no row" an `Ok(None)`.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for no row.
    ///
    /// # Errors
    /// Any other error.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A PostgreSQL connection with its prepared statements.
pub struct PgConn {
    url: String,
    client: Mutex<postgres::Client>,
    statements: Mutex<HashMap<String, postgres::Statement>>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn").finish_non_exhaustive()
    }
}

/// A connection to either database.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per store, never moved around"
)]
pub enum Connection {
    /// SQLite (behind a lock only so that the connection can be lent to
    /// another thread; it is never contended).
    Sqlite(Mutex<rusqlite::Connection>),
    /// PostgreSQL.
    Postgres(PgConn),
}

/// The common dialect rewritten for PostgreSQL: `?N` → `$N`,
/// `json_extract(x, '$.a.b')` → `(x::jsonb #>> '{a,b}')`,
/// `json_each(?N)` → `jsonb_array_elements_text($N::jsonb)`, `instr(` →
/// `strpos(`.
#[must_use]
pub fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    let mut in_str = false;
    while let Some(ch) = rest.chars().next() {
        if ch == '\'' {
            in_str = !in_str;
        } else if !in_str {
            if ch == '?' {
                out.push('$');
                rest = &rest[1..];
                continue;
            }
            if let Some((done, text)) = json_extract(rest) {
                out.push_str(&done);
                rest = text;
                continue;
            }
            if let Some(r) = rest.strip_prefix("json_each(")
                && let Some((arg, after)) = r.split_once(')')
            {
                out.push_str("jsonb_array_elements_text(((");
                out.push_str(&translate(arg));
                out.push_str(")::text)::jsonb)");
                rest = after;
                continue;
            }
            if let Some(r) = rest.strip_prefix("instr(") {
                out.push_str("strpos(");
                rest = r;
                continue;
            }
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

/// `json_extract(EXPR, '$.a.b')` at the start of `text`: its translation
/// and what follows it.
fn json_extract(text: &str) -> Option<(String, &str)> {
    let r = text.strip_prefix("json_extract(")?;
    let (expr, r) = r.split_once(", '$.")?;
    let (path, after) = r.split_once("')")?;
    Some((
        format!(
            "({}::jsonb #>> '{{{}}}')",
            translate(expr),
            path.replace('.', ",")
        ),
        after,
    ))
}

/// A parameter as PostgreSQL expects it for the placeholder's type.
#[derive(Debug)]
struct PgParam(Value);

impl postgres::types::ToSql for PgParam {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use postgres::types::Type;
        match &self.0 {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*i != 0).to_sql(ty, out)
                } else {
                    i.to_string().to_sql(ty, out)
                }
            }
            Value::Bool(b) => {
                if *ty == Type::BOOL {
                    b.to_sql(ty, out)
                } else if *ty == Type::INT8 {
                    i64::from(*b).to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::from(*b).to_sql(ty, out)
                } else {
                    b.to_string().to_sql(ty, out)
                }
            }
            Value::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value as V};
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(V::Null),
            Value::Int(i) => ToSqlOutput::Owned(V::Integer(*i)),
            Value::Bool(b) => ToSqlOutput::Owned(V::Integer(i64::from(*b))),
            Value::Text(s) => ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(s.as_bytes())),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connection {
    /// An SQLite connection.
    #[must_use]
    pub fn sqlite(c: rusqlite::Connection) -> Self {
        Connection::Sqlite(Mutex::new(c))
    }
}

fn values(params: &[&dyn ToValue]) -> Vec<Value> {
    params.iter().map(|p| p.to_value()).collect()
}

impl PgConn {
    /// Connects to `url` (`postgres://user@host:port/db`).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub fn connect(url: &str) -> Result<Self> {
        let client = postgres::Client::connect(url, postgres::NoTls)?;
        Ok(Self {
            url: url.to_owned(),
            client: Mutex::new(client),
            statements: Mutex::new(HashMap::new()),
        })
    }

    /// The client, connected again first when the connection was lost (the
    /// database restarted, the network dropped): the failed statement's
    /// caller saw the error; the next one gets a fresh session.
    fn client(&self) -> Result<std::sync::MutexGuard<'_, postgres::Client>> {
        let mut client = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if client.is_closed() {
            *client = postgres::Client::connect(&self.url, postgres::NoTls)?;
            self.statements
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
        Ok(client)
    }

    fn with<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&mut postgres::Client, &postgres::Statement, &[PgParam]) -> Result<T>,
    ) -> Result<T> {
        let mut client = self.client()?;
        let stmt = {
            let mut cache = self
                .statements
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match cache.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = client.prepare(&translate(sql))?;
                    cache.insert(sql.to_owned(), s.clone());
                    s
                }
            }
        };
        let ps: Vec<PgParam> = values(params).into_iter().map(PgParam).collect();
        f(&mut client, &stmt, &ps)
    }
}

fn pg_refs(ps: &[PgParam]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    ps.iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl Connection {
    /// SQLite's plan for `sql` (`EXPLAIN QUERY PLAN`, every parameter
    /// `NULL`), one line a step, for a test that a query finds its rows by
    /// an index; `None` on PostgreSQL, whose plans follow its statistics.
    ///
    /// # Errors
    /// When SQLite cannot prepare the statement.
    pub fn sqlite_plan(&self, sql: &str) -> Result<Option<Vec<String>>> {
        let Connection::Sqlite(c) = self else {
            return Ok(None);
        };
        let c = lock(c);
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let nulls = std::iter::repeat_n(rusqlite::types::Null, st.parameter_count());
        let steps = st
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(steps))
    }

    /// Which database this is.
    #[must_use]
    pub fn dialect(&self) -> Dialect {
        match self {
            Connection::Sqlite(_) => Dialect::Sqlite,
            Connection::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs statements with no parameters and no result (schema, `BEGIN`).
    ///
    /// # Errors
    /// The database's.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(lock(c).execute_batch(sql)?),
            Connection::Postgres(p) => Ok(p.client()?.batch_execute(sql)?),
        }
    }

    /// Runs one statement; how many rows it changed.
    ///
    /// # Errors
    /// The database's.
    pub fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
        match self {
            Connection::Sqlite(c) => {
                let vs = values(params);
                let c = lock(c);
                let mut st = c.prepare_cached(sql)?;
                Ok(st.execute(rusqlite::params_from_iter(vs.iter()))?)
            }
            Connection::Postgres(p) => p.with(sql, params, |client, st, ps| {
                let n = client.execute(st, &pg_refs(ps))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }),
        }
    }

    /// Every row of a query, each mapped by `f`.
    ///
    /// # Errors
    /// The database's, or `f`'s.
    pub fn query<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self {
            Connection::Sqlite(c) => {
                let vs = values(params);
                let c = lock(c);
                let mut st = c.prepare_cached(sql)?;
                let mut rows = st.query(rusqlite::params_from_iter(vs.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Sqlite(r))?);
                }
                Ok(out)
            }
            Connection::Postgres(p) => p.with(sql, params, |client, st, ps| {
                let rows = client.query(st, &pg_refs(ps))?;
                rows.iter().map(|r| f(&Row::Postgres(r))).collect()
            }),
        }
    }

    /// The first row of a query, mapped by `f`; [`Error::NoRows`] when there
    /// is none.
    ///
    /// # Errors
    /// The database's, `f`'s, or no row.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut f = Some(f);
        let mut out = None;
        match self {
            Connection::Sqlite(c) => {
                let vs = values(params);
                let c = lock(c);
                let mut st = c.prepare_cached(sql)?;
                let mut rows = st.query(rusqlite::params_from_iter(vs.iter()))?;
                if let Some(r) = rows.next()?
                    && let Some(f) = f.take()
                {
                    out = Some(f(&Row::Sqlite(r))?);
                }
            }
            Connection::Postgres(p) => {
                let row = p.with(sql, params, |client, st, ps| {
                    Ok(client.query_opt(st, &pg_refs(ps))?)
                })?;
                if let Some(r) = row
                    && let Some(f) = f.take()
                {
                    out = Some(f(&Row::Postgres(&r))?);
                }
            }
        }
        out.ok_or(Error::NoRows)
    }

    /// A statement to run several times (kept for the code that prepares
    /// first; statements are cached by text either way).
    ///
    /// # Errors
    /// Never; kept fallible like the libraries it stands for.
    pub fn prepare_cached<'c>(&'c self, sql: &str) -> Result<Statement<'c>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_owned(),
        })
    }

    /// As [`Connection::prepare_cached`].
    ///
    /// # Errors
    /// Never.
    pub fn prepare<'c>(&'c self, sql: &str) -> Result<Statement<'c>> {
        self.prepare_cached(sql)
    }
}

/// A statement of a connection.
#[derive(Debug)]
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    /// Every row, each mapped by `f`.
    ///
    /// # Errors
    /// The database's.
    pub fn query_map<T>(
        &mut self,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.conn.query(&self.sql, params, |r| Ok(f(r)))?;
        Ok(rows.into_iter())
    }

    /// Runs it; how many rows it changed.
    ///
    /// # Errors
    /// The database's.
    pub fn execute(&mut self, params: &[&dyn ToValue]) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_dialect_becomes_postgresql() {
        assert_eq!(
            translate(
                "SELECT a FROM t WHERE b = ?1 AND c = '?' AND d IN (SELECT value FROM json_each(?2))"
            ),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN (SELECT value FROM jsonb_array_elements_text((($2)::text)::jsonb))"
        );
        assert_eq!(
            translate("json_extract(record, '$.body.by') = ?3 AND instr(principal, ?4) > 0"),
            "(record::jsonb #>> '{body,by}') = $3 AND strpos(principal, $4) > 0"
        );
    }
}
