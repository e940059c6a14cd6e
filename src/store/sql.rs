//! A parameterised SQL fragment built at run time (filters, sort keys), usable inside
//! diesel's typed queries. Values always travel as bind parameters, never inside the text.

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::expression::{is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{self, HasSqlType};
use diesel::QueryResult;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Bool(bool),
    Timestamp(chrono::NaiveDateTime),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Sql(String),
    Bind(Bind),
}

/// SQL text with bind parameters, typed as an expression of `ST`.
#[derive(Debug, Clone)]
pub struct Fragment<ST> {
    parts: Vec<Part>,
    _type: PhantomData<ST>,
}

pub(crate) type Condition = Fragment<sql_types::Bool>;

impl<ST> Default for Fragment<ST> {
    fn default() -> Self {
        Fragment { parts: Vec::new(), _type: PhantomData }
    }
}

impl<ST> Fragment<ST> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends trusted SQL text (never user input).
    pub(crate) fn sql(mut self, text: &str) -> Self {
        match self.parts.last_mut() {
            Some(Part::Sql(s)) => s.push_str(text),
            _ => self.parts.push(Part::Sql(text.to_string())),
        }
        self
    }

    /// Appends a bind parameter.
    pub(crate) fn bind(mut self, value: Bind) -> Self {
        self.parts.push(Part::Bind(value));
        self
    }

    /// Appends another fragment.
    pub(crate) fn push<T>(mut self, other: Fragment<T>) -> Self {
        for part in other.parts {
            self = match part {
                Part::Sql(s) => self.sql(&s),
                Part::Bind(b) => self.bind(b),
            };
        }
        self
    }

    pub fn text(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Sql(s) => s.as_str(),
                Part::Bind(_) => "?",
            })
            .collect()
    }
}

impl<ST: sql_types::SqlType + sql_types::SingleValue> Expression for Fragment<ST> {
    type SqlType = ST;
}

impl<ST, QS> AppearsOnTable<QS> for Fragment<ST> where Self: Expression {}
impl<ST, QS> SelectableExpression<QS> for Fragment<ST> where Self: Expression {}

impl<ST> ValidGrouping<()> for Fragment<ST> {
    type IsAggregate = is_aggregate::Never;
}

impl<ST> QueryId for Fragment<ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST, DB> QueryFragment<DB> for Fragment<ST>
where
    DB: Backend
        + HasSqlType<sql_types::Text>
        + HasSqlType<sql_types::BigInt>
        + HasSqlType<sql_types::Bool>
        + HasSqlType<sql_types::Timestamp>,
    String: ToSql<sql_types::Text, DB>,
    i64: ToSql<sql_types::BigInt, DB>,
    bool: ToSql<sql_types::Bool, DB>,
    chrono::NaiveDateTime: ToSql<sql_types::Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        for part in &self.parts {
            match part {
                Part::Sql(s) => out.push_sql(s),
                Part::Bind(Bind::Text(v)) => out.push_bind_param::<sql_types::Text, _>(v)?,
                Part::Bind(Bind::Int(v)) => out.push_bind_param::<sql_types::BigInt, _>(v)?,
                Part::Bind(Bind::Bool(v)) => out.push_bind_param::<sql_types::Bool, _>(v)?,
                Part::Bind(Bind::Timestamp(v)) => out.push_bind_param::<sql_types::Timestamp, _>(v)?,
            }
        }
        Ok(())
    }
}

/// A whole statement built at run time, executed with `RunQueryDsl::execute`.
pub(crate) struct Statement {
    text: Fragment<sql_types::Bool>,
    keep: bool,
}

impl Statement {
    /// Prepared for this run only: a multi-row INSERT, whose text depends on the row count, and
    /// each count would keep a statement of thousands of parameters for the connection's lifetime.
    pub(crate) fn once(text: Fragment<sql_types::Bool>) -> Self {
        Statement { text, keep: false }
    }

    /// Prepared once per connection and kept by its text: a hot statement that has one text (or
    /// a few), such as an update of the write path. Diesel keeps none of its own UPDATEs, and
    /// preparing them again on every write cost the writer's turn about as much as running them.
    pub(crate) fn kept(text: Fragment<sql_types::Bool>) -> Self {
        Statement { text, keep: true }
    }

    pub(crate) fn text(self) -> Fragment<sql_types::Bool> {
        self.text
    }
}

impl QueryId for Statement {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend> QueryFragment<DB> for Statement
where
    Fragment<sql_types::Bool>: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if !self.keep {
            out.unsafe_to_cache_prepared();
        }
        self.text.walk_ast(out)
    }
}

impl<Conn> diesel::RunQueryDsl<Conn> for Statement {}

/// `INSERT INTO table (columns) VALUES (…), (…)` for `rows`, each given as its values; `None` is
/// NULL. Values travel as bind parameters.
pub(crate) fn insert_rows(table: &str, columns: &[&str], rows: impl IntoIterator<Item = Vec<Option<Bind>>>) -> Option<Statement> {
    let mut f = Fragment::new().sql(&format!("INSERT INTO {table} ({}) VALUES ", columns.join(", ")));
    let mut any = false;
    for row in rows {
        f = f.sql(if any { ", (" } else { "(" });
        for (i, v) in row.into_iter().enumerate() {
            if i > 0 {
                f = f.sql(", ");
            }
            f = match v {
                Some(b) => f.bind(b),
                None => f.sql("NULL"),
            };
        }
        f = f.sql(")");
        any = true;
    }
    any.then_some(Statement::once(f))
}

/// A whole SELECT built at run time, loaded with `RunQueryDsl::load` as values of `ST`
/// (sorted id lists, whose joins and ORDER BY diesel's typed queries cannot spell).
pub(crate) struct Select<ST>(pub Fragment<ST>);

impl<ST> QueryId for Select<ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST: sql_types::SqlType + sql_types::SingleValue> diesel::query_builder::Query for Select<ST> {
    type SqlType = ST;
}

impl<ST, DB: Backend> QueryFragment<DB> for Select<ST>
where
    Fragment<ST>: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }
}

impl<ST, Conn> diesel::RunQueryDsl<Conn> for Select<ST> {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use diesel::connection::InstrumentationEvent;
    use diesel::prelude::*;

    use super::{Bind, Fragment, Statement};
    use crate::store::schema::users;

    /// Counts the statements a connection prepares to keep.
    fn kept(conn: &mut crate::store::DbConn) -> Arc<AtomicUsize> {
        let n = Arc::new(AtomicUsize::new(0));
        let counter = n.clone();
        let watch = move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::CacheQuery { .. } = event {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        };
        match conn {
            crate::store::DbConn::Sqlite(c) => c.set_instrumentation(watch),
            crate::store::DbConn::Pg(c) => c.set_instrumentation(watch),
        }
        n
    }

    #[test]
    fn a_kept_statement_is_prepared_once_and_others_every_time() {
        let (_dir, pool) = crate::store::test_database();
        let mut conn = pool.get().unwrap();
        let prepared = kept(&mut conn);
        let update = |version: i64| {
            Fragment::new()
                .sql("UPDATE users SET version = ")
                .bind(Bind::Int(version))
                .sql(" WHERE id = ")
                .bind(Bind::Text("nobody".into()))
        };
        for version in 0..3i64 {
            Statement::kept(update(version)).execute(&mut *conn).unwrap();
        }
        assert_eq!(prepared.load(Ordering::SeqCst), 1, "kept at its first run, reused after");
        for version in 0..3i64 {
            Statement::once(update(version)).execute(&mut *conn).unwrap();
        }
        assert_eq!(prepared.load(Ordering::SeqCst), 1, "a statement for one run is not kept");
        for version in 0..3i64 {
            diesel::update(users::table.find("nobody")).set(users::version.eq(version)).execute(&mut *conn).unwrap();
        }
        assert_eq!(prepared.load(Ordering::SeqCst), 1, "diesel keeps no UPDATE of its own");
    }
}
