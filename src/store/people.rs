//! The roster read beside what the ledger and the known users hold of each address, in one
//! read-only snapshot: the roster streams on a connection of its own, read and decoded by a
//! task of its own while the caller plans, and the ledger and the known users follow it
//! through two cursors in the same order (the address in byte order) on a second connection,
//! merged one person at a time. So a cycle never holds the roster, the ledger or the users
//! whole, and the database, the decoding and the planning work at once.

use std::cmp::Ordering;
use std::collections::VecDeque;

use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row};
use tokio::sync::mpsc;

use super::desired::{self, PgTime, ReadError, RosterRow};
use super::{ledger, users};
use crate::domain::{roster_key, row_address, Email, LedgerEntry, Person};

/// Rows fetched from a cursor, and roster rows handed from the reading task, at a time.
const BATCH: usize = 1000;

/// Batches of decoded roster rows the reading task may run ahead of the planner.
const AHEAD: usize = 4;

/// A server-side cursor read a batch at a time, each row decoded with its address.
struct Cursor<T> {
    name: &'static str,
    decode: fn(&PgRow) -> Result<(String, T), sqlx::Error>,
    buffer: VecDeque<(String, T)>,
    done: bool,
}

impl<T> Cursor<T> {
    /// Opens, in the connection's transaction, a cursor `name` over `select`, whose one
    /// parameter is the target.
    async fn declare(
        db: &mut PgConnection,
        name: &'static str,
        select: &str,
        target: &str,
        decode: fn(&PgRow) -> Result<(String, T), sqlx::Error>,
    ) -> Result<Self, sqlx::Error> {
        sqlx::query(&format!("DECLARE {name} NO SCROLL CURSOR FOR {select}"))
            .persistent(false)
            .bind(target)
            .execute(db)
            .await?;
        Ok(Cursor {
            name,
            decode,
            buffer: VecDeque::new(),
            done: false,
        })
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

/// A roster row as the reading task hands it over: the key the roster is ordered by, the
/// address the row names (if it can be read) and the row.
struct Read {
    key: String,
    email: Option<Email>,
    row: RosterRow,
    /// When the row was written (`None` first), which orders rows of one key.
    created_at: Option<PgTime>,
}

impl Read {
    /// The order of rows of one key: the oldest first, then by their text in byte order.
    fn order(&self) -> (Option<PgTime>, &[u8]) {
        let text = match &self.row {
            Ok(row) => &row.email,
            Err(invalid) => &invalid.email,
        };
        (self.created_at, text.as_bytes())
    }
}

fn read(row: &PgRow) -> Read {
    let created_at = desired::created_at(row);
    let row = desired::decode(row);
    Read {
        key: roster_key(&row),
        email: row_address(&row),
        row,
        created_at,
    }
}

/// Rows of one key, gathered to be put in order; the database orders the roster by key alone,
/// which an index gives without sorting the table.
#[derive(Default)]
struct Group(Vec<Read>);

impl Group {
    /// Adds a row; when it starts a new key, moves the rows of the last one, in order, to
    /// `out`.
    fn push(&mut self, read: Read, out: &mut Vec<Read>) {
        if self.0.first().is_some_and(|first| first.key != read.key) {
            self.flush(out);
        }
        self.0.push(read);
    }

    fn flush(&mut self, out: &mut Vec<Read>) {
        if self.0.len() > 1 {
            self.0.sort_by(|a, b| a.order().cmp(&b.order()));
        }
        out.append(&mut self.0);
    }
}

fn ledger_entry(row: &PgRow) -> Result<(String, LedgerEntry), sqlx::Error> {
    let entry = ledger::entry_from_row(row)?;
    Ok((entry.email.as_str().to_owned(), entry))
}

fn known_user(row: &PgRow) -> Result<(String, bool), sqlx::Error> {
    Ok((row.try_get("email")?, row.try_get("deleted")?))
}

/// Streams the roster's rows, decoded, to `rows` in batches until it ends, the receiver goes
/// away, or the database fails (sent as the last message). The connection is closed at the
/// end, never returned to the pool: it holds the roster's transaction, and, when the
/// receiver went away early, the rest of the roster, which the server stops sending once the
/// connection closes.
async fn stream_roster(
    mut conn: PoolConnection<Postgres>,
    sql: String,
    rows: mpsc::Sender<Result<Vec<Read>, sqlx::Error>>,
) {
    let mut stream = sqlx::query(&sql).persistent(false).fetch(&mut *conn);
    let mut batch = Vec::with_capacity(BATCH);
    let mut group = Group::default();
    loop {
        let next = tokio::select! {
            biased;
            () = rows.closed() => return,
            next = stream.try_next() => next,
        };
        match next {
            Ok(Some(row)) => group.push(read(&row), &mut batch),
            Ok(None) => break,
            Err(e) => {
                let _ = rows.send(Err(e)).await;
                return;
            }
        }
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if rows.send(Ok(full)).await.is_err() {
                return;
            }
        }
    }
    drop(stream);
    group.flush(&mut batch);
    if !batch.is_empty() {
        let _ = rows.send(Ok(batch)).await;
    }
}

/// Hands every roster row, in the roster's order, to `each` with what is known of the person
/// its address names. Returns how many rows there were.
///
/// Takes two of the pool's connections at once: the roster's and the one the ledger and the
/// known users are read on. The relation's shape is [`desired::check`]ed first, by the caller.
pub async fn for_each(
    pool: &PgPool,
    relation: &str,
    target: &str,
    each: impl FnMut(RosterRow, Person),
) -> Result<usize, ReadError> {
    stream(pool, relation, Some(target), each).await
}

/// Every roster row by address (`lower(btrim(email) COLLATE "C")`: spaces trimmed, ASCII
/// letters lower-cased, in byte order), the oldest first among rows of one address, each read
/// or refused on its own: as a cycle reads them ([`for_each`]), without any target's ledger.
pub async fn read_roster(pool: &PgPool, relation: &str) -> Result<Vec<RosterRow>, ReadError> {
    let mut rows = Vec::new();
    stream(pool, relation, None, |row, _| rows.push(row)).await?;
    Ok(rows)
}

/// [`for_each`], with the person of each address when a target's ledger is given, else an
/// empty one.
async fn stream(
    pool: &PgPool,
    relation: &str,
    target: Option<&str>,
    mut each: impl FnMut(RosterRow, Person),
) -> Result<usize, ReadError> {
    let roster_error = |e| desired::relation_error(e, relation);
    // The roster's connection is closed when dropped, wherever this ends: it holds a
    // transaction of its own, begun here rather than by a pooled `Transaction`, so that the
    // reading task can own it.
    let mut roster = pool.acquire().await?;
    roster.close_on_drop();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *roster)
        .await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *roster)
        .await?;
    let mut tx = super::read_only(pool).await?;
    // The ledger and the users as of the roster's snapshot (a name cannot be a bound
    // parameter of SET TRANSACTION SNAPSHOT: it is quoted as a literal).
    sqlx::query(&format!(
        "SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    ))
    .persistent(false)
    .execute(&mut *tx)
    .await?;
    // Every row is read: plan the cursors for the whole result, not for their first rows.
    sqlx::query("SET LOCAL cursor_tuple_fraction = 1")
        .execute(&mut *tx)
        .await?;

    let (sender, mut batches) = mpsc::channel(AHEAD);
    let reader = tokio::spawn(stream_roster(
        roster,
        desired::select(relation, desired::BY_ADDRESS),
        sender,
    ));
    let merged = merge(&mut tx, target, &mut batches, &mut each).await;
    // An error ends the merge: the reader sees the receiver gone and closes its connection.
    drop(batches);
    let joined = reader.await;
    let count = match merged {
        Ok(count) => count,
        Err(Merge::Roster(e)) => return Err(roster_error(e)),
        Err(Merge::Other(e)) => return Err(e.into()),
    };
    // The roster ends where the reader stopped sending, so the rows merged are the whole
    // roster only if it finished: one that panicked carries its panic on here, as if the
    // roster had been read in line, and one stopped by the runtime fails the read. No plan
    // is made of a partial roster.
    match joined {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => return Err(ReadError::Interrupted),
    }
    tx.rollback().await?;
    Ok(count)
}

/// Why the merge stopped: the roster could not be read, or the ledger or the users could not.
enum Merge {
    Roster(sqlx::Error),
    Other(sqlx::Error),
}

impl From<sqlx::Error> for Merge {
    fn from(e: sqlx::Error) -> Self {
        Merge::Other(e)
    }
}

async fn merge(
    tx: &mut PgConnection,
    target: Option<&str>,
    batches: &mut mpsc::Receiver<Result<Vec<Read>, sqlx::Error>>,
    each: &mut impl FnMut(RosterRow, Person),
) -> Result<usize, Merge> {
    let Some(target) = target else {
        let mut count = 0;
        while let Some(batch) = batches.recv().await {
            for read in batch.map_err(Merge::Roster)? {
                count += 1;
                each(read.row, Person::default());
            }
        }
        return Ok(count);
    };
    let mut ledger = Cursor::declare(
        tx,
        "invite_sync_ledger_by_email",
        ledger::BY_EMAIL,
        target,
        ledger_entry,
    )
    .await?;
    let mut users = Cursor::declare(
        tx,
        "invite_sync_users_by_email",
        users::BY_EMAIL,
        target,
        known_user,
    )
    .await?;
    let mut last_key: Option<String> = None;
    let mut count = 0;
    while let Some(batch) = batches.recv().await {
        for Read {
            key, email, row, ..
        } in batch.map_err(Merge::Roster)?
        {
            count += 1;
            let Some(email) = email else {
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
                let entries = ledger.take(tx, &key).await?;
                let found = users.take(tx, &key).await?.first().copied();
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
    }
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
