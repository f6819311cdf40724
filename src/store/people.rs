//! The roster read beside what the ledger and the known users hold of each address: three
//! cursors in one order (the address in byte order) on one connection, in one read-only
//! snapshot, merged one person at a time, so a cycle never holds the roster, the ledger or the
//! users whole, and takes no more connections than reading the roster alone.

use std::cmp::Ordering;
use std::collections::VecDeque;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use super::desired::{self, ReadError, RosterRow};
use super::{ledger, users};
use crate::domain::{row_address, LedgerEntry, Person};

/// Rows fetched from a cursor at a time.
const BATCH: usize = 1000;

/// A server-side cursor read a batch at a time, each row decoded with its address.
struct Cursor<T> {
    name: &'static str,
    decode: fn(&PgRow) -> Result<(String, T), sqlx::Error>,
    buffer: VecDeque<(String, T)>,
    done: bool,
}

impl<T> Cursor<T> {
    fn new(name: &'static str, decode: fn(&PgRow) -> Result<(String, T), sqlx::Error>) -> Self {
        Cursor {
            name,
            decode,
            buffer: VecDeque::new(),
            done: false,
        }
    }

    /// The next row, fetching a batch when none is left.
    async fn next(&mut self, db: &mut PgConnection) -> Result<Option<(String, T)>, sqlx::Error> {
        if self.buffer.is_empty() && !self.done {
            let rows = sqlx::query(&format!("FETCH {BATCH} FROM {}", self.name))
                .persistent(false)
                .fetch_all(&mut *db)
                .await?;
            self.done = rows.len() < BATCH;
            for row in &rows {
                self.buffer.push_back((self.decode)(row)?);
            }
        }
        Ok(self.buffer.pop_front())
    }

    /// The rows whose address is `key`, passing over those before it (addresses no roster row
    /// names). Keys must be asked in ascending order.
    async fn take(&mut self, db: &mut PgConnection, key: &str) -> Result<Vec<T>, sqlx::Error> {
        let mut taken = Vec::new();
        while let Some((address, item)) = self.next(db).await? {
            match address.as_str().cmp(key) {
                Ordering::Less => {}
                Ordering::Equal => taken.push(item),
                Ordering::Greater => {
                    self.buffer.push_front((address, item));
                    break;
                }
            }
        }
        Ok(taken)
    }
}

fn roster_row(row: &PgRow) -> Result<(String, RosterRow), sqlx::Error> {
    let key: Option<String> = row.try_get("sort_key")?;
    Ok((key.unwrap_or_default(), desired::decode(row)))
}

fn ledger_entry(row: &PgRow) -> Result<(String, LedgerEntry), sqlx::Error> {
    let entry = ledger::entry_from_row(row)?;
    Ok((entry.email.as_str().to_owned(), entry))
}

fn known_user(row: &PgRow) -> Result<(String, bool), sqlx::Error> {
    Ok((row.try_get("email")?, row.try_get("deleted")?))
}

/// Hands every roster row, in the roster's order, to `each` with what is known of the person
/// its address names. Returns how many rows there were.
pub async fn for_each(
    pool: &PgPool,
    relation: &str,
    target: &str,
    mut each: impl FnMut(RosterRow, Person),
) -> Result<usize, ReadError> {
    let roster_error = |e| desired::relation_error(e, relation);
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // Every row is read: plan the cursors for the whole result, not for their first rows.
    sqlx::query("SET LOCAL cursor_tuple_fraction = 1")
        .execute(&mut *tx)
        .await?;
    let sql = format!(
        "DECLARE invite_sync_roster NO SCROLL CURSOR FOR {}",
        desired::select(relation, "")
    );
    sqlx::query(&sql)
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(roster_error)?;
    ledger::declare_by_email(&mut *tx, "invite_sync_ledger_by_email", target).await?;
    users::declare_by_email(&mut *tx, "invite_sync_users_by_email", target).await?;
    let mut roster = Cursor::new("invite_sync_roster", roster_row);
    let mut ledger = Cursor::new("invite_sync_ledger_by_email", ledger_entry);
    let mut users = Cursor::new("invite_sync_users_by_email", known_user);
    let mut last_key: Option<String> = None;
    let mut count = 0;
    while let Some((key, row)) = roster.next(&mut tx).await.map_err(roster_error)? {
        count += 1;
        let Some(email) = row_address(&row) else {
            each(row, Person::default());
            continue;
        };
        // Rows of one address come together; only the first needs its person.
        if last_key.as_deref() == Some(key.as_str()) {
            each(row, Person::default());
            continue;
        }
        let in_order = last_key.as_ref().is_none_or(|last| *last < key);
        let person = if key == email.as_str() && in_order {
            // The row's address is the key the cursors are ordered by: its person is next.
            let entries = ledger.take(&mut tx, &key).await?;
            let found = users.take(&mut tx, &key).await?.first().copied();
            last_key = Some(key);
            person(entries, found)
        } else {
            // An address the database normalises differently: asked for on its own.
            let entries = ledger::of_email(&mut *tx, target, &email).await?;
            let found = users::of_email(&mut *tx, target, &email).await?;
            person(entries, found)
        };
        each(row, person);
    }
    tx.rollback().await?;
    Ok(count)
}

/// `deleted`: whether the address is a known user's (`Some`) and whether Clerk deleted them.
fn person(entries: Vec<LedgerEntry>, deleted: Option<bool>) -> Person {
    Person {
        entries,
        user: deleted == Some(false),
        deleted: deleted == Some(true),
    }
}
