//! Reading the roster: `desired_invitees`, or the table or view `source.relation` names.

use sqlx::PgExecutor;

use crate::domain::DesiredRow;

/// Quotes a validated relation name (`name` or `schema.name`) for SQL.
pub fn quote_relation(relation: &str) -> String {
    relation
        .split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// Every roster row, oldest first.
pub async fn load(db: impl PgExecutor<'_>, relation: &str) -> Result<Vec<DesiredRow>, sqlx::Error> {
    // The relation comes from the configuration, so this query is built at run time.
    let sql = format!(
        "SELECT email, public_metadata, redirect_url, notify, expires_in_days, template_slug,
                not_before, source, created_at, updated_at
         FROM {} ORDER BY created_at NULLS FIRST, email",
        quote_relation(relation)
    );
    sqlx::query_as::<_, DesiredRow>(&sql).fetch_all(db).await
}

/// How many roster rows there are.
pub async fn count(db: impl PgExecutor<'_>, relation: &str) -> Result<i64, sqlx::Error> {
    let sql = format!("SELECT count(*) FROM {}", quote_relation(relation));
    sqlx::query_scalar::<_, i64>(&sql).fetch_one(db).await
}
