//! The roster read beside what the ledger and the known users hold of each address, in one
//! read-only snapshot. In the roster's order (the address in byte order) the roster, the
//! ledger and the known users stream at once, each on a connection of its own and read and
//! decoded by a task of its own while the caller plans, and are merged one person at a time.
//! In queue order ([`for_each_queued`]) the roster streams alone and the people of each batch
//! of rows are looked up by address. So a read never holds the roster, the ledger or the users
//! whole, and the database, the decoding and the planning work at once.

use std::cmp::Ordering;
use std::collections::HashMap;

use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Row};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::copy_out::{self, CopyOut, Tuple};
use super::desired::{self, PgTime, ReadError, RosterRow};
use super::{ledger, users};
use crate::domain::{roster_key, row_address, AcceptedEntry, Email, LedgerEntry, Person};

/// Rows fetched from a cursor, and rows handed from a reading task, at a time.
const BATCH: usize = 1000;

/// Batches of decoded rows a reading task may run ahead of the merge.
const AHEAD: usize = 4;

/// The pool size from which the ledger (its accepted entries and the rest apart) and the known
/// users each stream on a connection of their own: the roster's, their three and one for the
/// addresses looked up on their own make five, and a cycle under `run` also holds the
/// target's lock and the roster-change listener's. A smaller pool reads the ledger and the
/// users through three cursors in turn on one connection.
const STREAMS_FROM: u32 = 7;

/// The order the roster is read in: by address ([`for_each`]), or the create queue's order
/// ([`for_each_queued`]).
const BY_QUEUE: &str = " ORDER BY coalesce(not_before, created_at) NULLS FIRST, \
    created_at NULLS FIRST, lower(btrim(email::text) COLLATE \"C\")";

/// A consistent view of the database that several reads share: a read-only transaction that
/// exported its snapshot, open while this lives. `plan` reads the roster more than once, and
/// every read sees the same roster, ledger and users.
pub struct Snapshot {
    _conn: PoolConnection<Postgres>,
    id: String,
}

impl Snapshot {
    pub async fn export(pool: &PgPool) -> Result<Snapshot, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        // Closed when dropped: it holds the exporting transaction.
        conn.close_on_drop();
        let id = begin_exporting(&mut conn).await?;
        Ok(Snapshot { _conn: conn, id })
    }
}

async fn begin_exporting(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await?;
    no_jit(conn).await?;
    sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *conn)
        .await
}

/// A connection of the pool in a read-only transaction that sees `snapshot`, closed when
/// dropped (it holds the transaction).
async fn importing(pool: &PgPool, snapshot: &str) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await?;
    // A name cannot be a bound parameter of SET TRANSACTION SNAPSHOT: it is quoted as a
    // literal.
    sqlx::query(&format!(
        "SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    ))
    .persistent(false)
    .execute(&mut *conn)
    .await?;
    // Every row is read: plan the queries for the whole result, not for their first rows.
    sqlx::query("SET LOCAL cursor_tuple_fraction = 1")
        .execute(&mut *conn)
        .await?;
    no_jit(&mut conn).await?;
    Ok(conn)
}

/// Turns off, for the transaction, the compiling of a query's expressions that PostgreSQL
/// does for an expensive one: the reads are index scans whose cost the row count makes
/// large, and the compiling took longer than it saved.
async fn no_jit(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL jit = off").execute(conn).await?;
    Ok(())
}

/// Rows decoded with their address, a batch at a time.
type Batches<T> = mpsc::Receiver<Result<Vec<T>, sqlx::Error>>;

/// A row of the ledger or of the known users, and the address it is ordered by.
trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for LedgerEntry {
    fn key(&self) -> &str {
        self.email.as_str()
    }
}

/// An accepted ledger entry and its address.
struct Accepted {
    email: String,
    entry: AcceptedEntry,
}

impl Keyed for Accepted {
    fn key(&self) -> &str {
        &self.email
    }
}

fn accepted_tuple(row: &Tuple<'_>) -> Result<Accepted, sqlx::Error> {
    let (email, entry) = ledger::accepted_from_tuple(row)?;
    Ok(Accepted { email, entry })
}

/// A known user's address, and whether Clerk deleted them.
struct KnownUser {
    email: String,
    deleted: bool,
}

impl Keyed for KnownUser {
    fn key(&self) -> &str {
        &self.email
    }
}

/// Streams `select`'s rows (its one parameter, `$1`, the target), decoded, to `rows` in
/// batches until they end, the receiver goes away, or the database fails (sent as the last
/// message). The rows are read as a binary copy ([`copy_out`]). The connection is closed at
/// the end, never returned to the pool (see [`stream_roster`]).
async fn stream_side<T: Send + 'static>(
    mut conn: PoolConnection<Postgres>,
    select: &'static str,
    target: String,
    decode: fn(&Tuple<'_>) -> Result<T, sqlx::Error>,
    rows: mpsc::Sender<Result<Vec<T>, sqlx::Error>>,
) {
    let select = select.replace("$1", &copy_out::literal(&target));
    let mut copy = match CopyOut::start(&mut conn, &select).await {
        Ok(copy) => copy,
        Err(e) => {
            let _ = rows.send(Err(e)).await;
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut failed = None;
    loop {
        // A message carries a row or so: whether the merge went away is asked once a batch,
        // when it is sent, rather than raced against every message.
        let next = copy
            .next(|tuple| {
                if failed.is_none() {
                    match decode(tuple) {
                        Ok(item) => batch.push(item),
                        Err(e) => failed = Some(e),
                    }
                }
            })
            .await;
        let more = match (next, failed.take()) {
            (Err(e), _) | (Ok(_), Some(e)) => {
                let _ = rows.send(Err(e)).await;
                return;
            }
            (Ok(more), None) => more,
        };
        if batch.len() >= BATCH || !more {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if !full.is_empty() && rows.send(Ok(full)).await.is_err() {
                return;
            }
        }
        if !more {
            return;
        }
    }
}

/// A task streaming `select`'s rows (see [`stream_side`]) on a connection that sees
/// `snapshot`, and the batches it sends.
async fn side<T: Send + 'static>(
    pool: &PgPool,
    snapshot: &str,
    select: &'static str,
    target: &str,
    decode: fn(&Tuple<'_>) -> Result<T, sqlx::Error>,
) -> Result<Source<T>, sqlx::Error> {
    let conn = importing(pool, snapshot).await?;
    let (rows, batches) = mpsc::channel(AHEAD);
    tokio::spawn(stream_side(conn, select, target.to_owned(), decode, rows));
    Ok(Source::Streamed(batches))
}

/// A server-side cursor read a batch at a time, each row decoded as a stream's is (its binary
/// values as a [`Tuple`]).
struct Cursor<T> {
    name: &'static str,
    decode: fn(&Tuple<'_>) -> Result<T, sqlx::Error>,
}

impl<T> Cursor<T> {
    /// Opens, in the connection's transaction, a cursor `name` over `select`, whose one
    /// parameter is the target.
    async fn declare(
        db: &mut PgConnection,
        name: &'static str,
        select: &str,
        target: &str,
        decode: fn(&Tuple<'_>) -> Result<T, sqlx::Error>,
    ) -> Result<Self, sqlx::Error> {
        sqlx::query(&format!("DECLARE {name} NO SCROLL CURSOR FOR {select}"))
            .persistent(false)
            .bind(target)
            .execute(db)
            .await?;
        Ok(Cursor { name, decode })
    }

    async fn fetch(&self, db: &mut PgConnection) -> Result<Vec<T>, sqlx::Error> {
        let rows = sqlx::query(&format!("FETCH {BATCH} FROM {}", self.name))
            .persistent(false)
            .fetch_all(&mut *db)
            .await?;
        rows.iter()
            .map(|row| (self.decode)(&Tuple::new(&copy_out::row_fields(row))))
            .collect()
    }
}

/// Where the rows of the ledger or of the known users come from, by address.
enum Source<T> {
    /// A task streaming them on a connection of its own.
    Streamed(Batches<T>),
    /// A cursor on the merge's own connection, fetched in turn with the other's.
    Cursor(Cursor<T>),
}

/// Rows by address, taken person by person.
struct Side<T> {
    source: Source<T>,
    /// The rows of the last batch not yet taken.
    buffer: std::vec::IntoIter<T>,
    done: bool,
}

impl<T> Side<T> {
    fn new(source: Source<T>) -> Self {
        Side {
            source,
            buffer: Vec::new().into_iter(),
            done: false,
        }
    }

    /// Fetches a batch when none is left; false once the rows have ended.
    async fn fill(
        &mut self,
        db: &mut Option<PoolConnection<Postgres>>,
    ) -> Result<bool, sqlx::Error> {
        if self.buffer.as_slice().is_empty() && !self.done {
            match &mut self.source {
                Source::Streamed(batches) => match batches.recv().await {
                    Some(batch) => self.buffer = batch?.into_iter(),
                    None => self.done = true,
                },
                Source::Cursor(cursor) => {
                    let db = db.as_deref_mut().ok_or(sqlx::Error::PoolClosed)?;
                    let rows = cursor.fetch(db).await?;
                    self.done = rows.len() < BATCH;
                    self.buffer = rows.into_iter();
                }
            }
        }
        Ok(!self.buffer.as_slice().is_empty())
    }
}

impl<T: Keyed> Side<T> {
    /// The next row whose address is not past `key`, and whether it is `key`'s (else it is
    /// one no roster row names, passed over); `None` once the rows reach past `key` or end.
    async fn next_through(
        &mut self,
        db: &mut Option<PoolConnection<Postgres>>,
        key: &str,
    ) -> Result<Option<(bool, T)>, sqlx::Error> {
        if !self.fill(db).await? {
            return Ok(None);
        }
        let order = match self.buffer.as_slice().first() {
            Some(front) => front.key().cmp(key),
            None => return Ok(None),
        };
        if order == Ordering::Greater {
            return Ok(None);
        }
        Ok(self
            .buffer
            .next()
            .map(|item| (order == Ordering::Equal, item)))
    }

    /// The rows whose address is `key`, passing over those before it. Keys must be asked in
    /// ascending order.
    async fn take(
        &mut self,
        db: &mut Option<PoolConnection<Postgres>>,
        key: &str,
    ) -> Result<Vec<T>, sqlx::Error> {
        let mut taken = Vec::new();
        while let Some((its, item)) = self.next_through(db, key).await? {
            if its {
                taken.push(item);
            }
        }
        Ok(taken)
    }

    /// The first row whose address is `key`, passing over those before it and the rest of
    /// its address's. Keys must be asked in ascending order.
    async fn take_first(
        &mut self,
        db: &mut Option<PoolConnection<Postgres>>,
        key: &str,
    ) -> Result<Option<T>, sqlx::Error> {
        let mut first = None;
        while let Some((its, item)) = self.next_through(db, key).await? {
            if its && first.is_none() {
                first = Some(item);
            }
        }
        Ok(first)
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

fn read(row: &Tuple<'_>) -> Read {
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

fn known_user_tuple(row: &Tuple<'_>) -> Result<KnownUser, sqlx::Error> {
    let corrupt = |e: String| sqlx::Error::Decode(format!("a known user: {e}").into());
    let email = row.required_text(0).map_err(corrupt)?;
    let deleted = row
        .bool(1)
        .map_err(corrupt)?
        .ok_or_else(|| corrupt("deleted is NULL".to_owned()))?;
    Ok(KnownUser {
        email: email.to_owned(),
        deleted,
    })
}

/// Streams the roster's rows, decoded, to `rows` in batches until it ends, the receiver goes
/// away, or the database fails (sent as the last message); by address, rows of one address
/// put in order (`grouped`), or as the query orders them. Gives the connection back, for the
/// reader to close once the merge ends ([`RosterReader::finish`]), never to the pool: it
/// holds the roster's transaction, whose snapshot the addresses looked up on their own import
/// until then, and, when the receiver went away early, the rest of the roster, which the
/// server stops sending once the connection closes.
async fn stream_roster(
    mut conn: PoolConnection<Postgres>,
    sql: String,
    grouped: bool,
    rows: mpsc::Sender<Result<Vec<Read>, sqlx::Error>>,
) -> PoolConnection<Postgres> {
    send_roster(&mut conn, &sql, grouped, rows).await;
    conn
}

async fn send_roster(
    conn: &mut PgConnection,
    sql: &str,
    grouped: bool,
    rows: mpsc::Sender<Result<Vec<Read>, sqlx::Error>>,
) {
    let mut copy = match CopyOut::start(conn, sql).await {
        Ok(copy) => copy,
        Err(e) => {
            let _ = rows.send(Err(e)).await;
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut group = Group::default();
    loop {
        // Whether the merge went away is asked once a batch, when it is sent.
        let next = copy
            .next(|tuple| {
                if grouped {
                    group.push(read(tuple), &mut batch);
                } else {
                    batch.push(read(tuple));
                }
            })
            .await;
        let more = match next {
            Ok(more) => more,
            Err(e) => {
                let _ = rows.send(Err(e)).await;
                return;
            }
        };
        if !more {
            break;
        }
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if rows.send(Ok(full)).await.is_err() {
                return;
            }
        }
    }
    group.flush(&mut batch);
    if !batch.is_empty() {
        let _ = rows.send(Ok(batch)).await;
    }
}

/// Hands every roster row, in the roster's order, to `each` with what is known of the person
/// its address names. Returns how many rows there were.
///
/// Takes four of the pool's connections at once (the roster's, the ledger's accepted entries',
/// its other entries' and the known users'), and a fifth when an address must be looked up on
/// its own; a pool of fewer than seven reads the ledger and the users on one connection. The
/// relation's shape is [`desired::check`]ed first, by the caller.
pub async fn for_each(
    pool: &PgPool,
    relation: &str,
    target: &str,
    each: impl FnMut(RosterRow, Person),
) -> Result<usize, ReadError> {
    stream(pool, None, relation, Some(target), each).await
}

/// [`for_each`] in a snapshot other reads share.
pub async fn for_each_in(
    pool: &PgPool,
    snapshot: &Snapshot,
    relation: &str,
    target: &str,
    each: impl FnMut(RosterRow, Person),
) -> Result<usize, ReadError> {
    stream(pool, Some(&snapshot.id), relation, Some(target), each).await
}

/// Every roster row by address (`lower(btrim(email) COLLATE "C")`: spaces trimmed, ASCII
/// letters lower-cased, in byte order), the oldest first among rows of one address, each read
/// or refused on its own: as a cycle reads them ([`for_each`]), without any target's ledger.
pub async fn read_roster(pool: &PgPool, relation: &str) -> Result<Vec<RosterRow>, ReadError> {
    let mut rows = Vec::new();
    stream(pool, None, relation, None, |row, _| rows.push(row)).await?;
    Ok(rows)
}

/// A task reading the roster, and the batches it sends.
struct RosterReader {
    batches: mpsc::Receiver<Result<Vec<Read>, sqlx::Error>>,
    task: JoinHandle<PoolConnection<Postgres>>,
}

impl RosterReader {
    fn start(conn: PoolConnection<Postgres>, sql: String, grouped: bool) -> RosterReader {
        let (sender, batches) = mpsc::channel(AHEAD);
        let task = tokio::spawn(stream_roster(conn, sql, grouped, sender));
        RosterReader { batches, task }
    }

    /// Waits for the task once the merge ended (an error ends it: the task sees the receiver
    /// gone and gives its connection back), and closes the roster's connection. The rows
    /// merged are the whole roster only if the task finished: one that panicked carries its
    /// panic on here, as if the roster had been read in line, and one stopped by the runtime
    /// fails the read. No plan is made of a partial roster.
    async fn finish(
        self,
        merged: Result<usize, Merge>,
        relation: &str,
    ) -> Result<usize, ReadError> {
        let RosterReader { batches, task } = self;
        drop(batches);
        let joined = task.await;
        let count = match merged {
            Ok(count) => count,
            Err(Merge::Roster(e)) => return Err(desired::relation_error(e, relation)),
            Err(Merge::Other(e)) => return Err(e.into()),
        };
        match joined {
            // The roster's connection closes here, ending the snapshot the merge read in.
            Ok(_roster) => Ok(count),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(ReadError::Interrupted),
        }
    }
}

/// [`for_each`], with the person of each address when a target's ledger is given, else an
/// empty one; in `snapshot` when one is given, else in one the roster's transaction exports.
async fn stream(
    pool: &PgPool,
    snapshot: Option<&str>,
    relation: &str,
    target: Option<&str>,
    mut each: impl FnMut(RosterRow, Person),
) -> Result<usize, ReadError> {
    // The roster's connection is closed when dropped, wherever this ends: it holds a
    // transaction of its own, begun here rather than by a pooled `Transaction`, so that the
    // reading task can own it.
    let (roster, snapshot) = match snapshot {
        Some(id) => (importing(pool, id).await?, id.to_owned()),
        None => {
            let mut roster = pool.acquire().await?;
            roster.close_on_drop();
            let id = begin_exporting(&mut roster).await?;
            (roster, id)
        }
    };
    let Some(target) = target else {
        let mut reader =
            RosterReader::start(roster, desired::select(relation, desired::BY_ADDRESS), true);
        let merged = async {
            let mut count = 0;
            while let Some(batch) = reader.batches.recv().await {
                for read in batch.map_err(Merge::Roster)? {
                    count += 1;
                    each(read.row, Person::default());
                }
            }
            Ok::<usize, Merge>(count)
        }
        .await;
        return reader.finish(merged, relation).await;
    };
    // The ledger and the users as of the roster's snapshot: each streaming on a connection of
    // its own when the pool allows, else three cursors on one.
    let (ledger, accepted, users, lookups) = if pool.options().get_max_connections() >= STREAMS_FROM
    {
        let ledger = side(
            pool,
            &snapshot,
            ledger::OPEN_BY_EMAIL,
            target,
            ledger::entry_from_tuple,
        );
        let accepted = side(
            pool,
            &snapshot,
            ledger::ACCEPTED_BY_EMAIL,
            target,
            accepted_tuple,
        );
        let users = side(pool, &snapshot, users::BY_EMAIL, target, known_user_tuple);
        // Their connections are opened and their snapshots imported at once.
        let (ledger, accepted, users) = futures_util::try_join!(ledger, accepted, users)?;
        (ledger, accepted, users, None)
    } else {
        let mut tx = importing(pool, &snapshot).await?;
        let ledger = Cursor::declare(
            &mut tx,
            "invite_sync_ledger_by_email",
            ledger::OPEN_BY_EMAIL,
            target,
            ledger::entry_from_tuple,
        )
        .await?;
        let accepted = Cursor::declare(
            &mut tx,
            "invite_sync_accepted_by_email",
            ledger::ACCEPTED_BY_EMAIL,
            target,
            accepted_tuple,
        )
        .await?;
        let users = Cursor::declare(
            &mut tx,
            "invite_sync_users_by_email",
            users::BY_EMAIL,
            target,
            known_user_tuple,
        )
        .await?;
        (
            Source::Cursor(ledger),
            Source::Cursor(accepted),
            Source::Cursor(users),
            Some(tx),
        )
    };
    let mut reader =
        RosterReader::start(roster, desired::select(relation, desired::BY_ADDRESS), true);
    let mut merge = Merger {
        pool,
        snapshot: &snapshot,
        target,
        ledger: Side::new(ledger),
        accepted: Side::new(accepted),
        users: Side::new(users),
        lookups,
        last_key: None,
    };
    let merged = merge.all(&mut reader.batches, &mut each).await;
    // The side streams end with their receivers: their tasks see them gone and close their
    // connections.
    drop(merge);
    reader.finish(merged, relation).await
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

/// The roster merged with the ledger and the users, by address.
struct Merger<'a> {
    pool: &'a PgPool,
    snapshot: &'a str,
    target: &'a str,
    ledger: Side<LedgerEntry>,
    accepted: Side<Accepted>,
    users: Side<KnownUser>,
    /// The connection addresses are looked up on one at a time (and the cursors read on, when
    /// there are cursors): taken when first needed.
    lookups: Option<PoolConnection<Postgres>>,
    last_key: Option<String>,
}

impl Merger<'_> {
    async fn all(
        &mut self,
        batches: &mut mpsc::Receiver<Result<Vec<Read>, sqlx::Error>>,
        each: &mut impl FnMut(RosterRow, Person),
    ) -> Result<usize, Merge> {
        let mut count = 0;
        while let Some(batch) = batches.recv().await {
            for read in batch.map_err(Merge::Roster)? {
                count += 1;
                let (row, person) = self.person(read).await?;
                each(row, person);
            }
        }
        Ok(count)
    }

    async fn person(&mut self, read: Read) -> Result<(RosterRow, Person), Merge> {
        let Read {
            key, email, row, ..
        } = read;
        let Some(email) = email else {
            return Ok((row, Person::default()));
        };
        // Rows of one address come together; only the first needs its person.
        let after_last = self.last_key.as_deref().map(|last| last.cmp(key.as_str()));
        if after_last == Some(Ordering::Equal) {
            return Ok((row, Person::default()));
        }
        let in_order = after_last.is_none_or(|order| order == Ordering::Less);
        let person = if key == email.as_str() && in_order {
            // The row's address is the key the streams are ordered by: its person is next.
            let entries = self.ledger.take(&mut self.lookups, &key).await?;
            let accepted = self.accepted.take(&mut self.lookups, &key).await?;
            let found = self
                .users
                .take_first(&mut self.lookups, &key)
                .await?
                .map(|user| user.deleted);
            self.last_key = Some(key);
            if found == Some(true) && !accepted.is_empty() {
                // Clerk deleted a user who accepted: the accepted entries are history, read
                // in full (see [`Person::of`]).
                let target = self.target;
                let entries = ledger::of_email(self.lookup().await?, target, &email).await?;
                person(entries, found)
            } else {
                Person {
                    entries,
                    accepted: accepted.into_iter().map(|a| a.entry).collect(),
                    user: found == Some(false),
                    deleted: found == Some(true),
                }
            }
        } else {
            // An address the database normalises differently: asked for on its own.
            let target = self.target;
            let db = self.lookup().await?;
            let entries = ledger::of_email(&mut *db, target, &email).await?;
            let found = users::of_email(&mut *db, target, &email).await?;
            person(entries, found)
        };
        Ok((row, person))
    }

    /// The connection addresses are looked up on, taken when first needed.
    async fn lookup(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.lookups.is_none() {
            self.lookups = Some(importing(self.pool, self.snapshot).await?);
        }
        self.lookups.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
    }
}

/// Hands every roster row to `each` in the create queue's order (the oldest `not_before`, a
/// row without one having waited since it was written, then the oldest row, then the
/// address), which an index of the roster table gives, with what the ledger and the known
/// users hold of the address it names, looked up a batch of rows at a time. Rows of one
/// address each get the person. Returns how many rows there were.
pub async fn for_each_queued(
    pool: &PgPool,
    snapshot: &Snapshot,
    relation: &str,
    target: &str,
    mut each: impl FnMut(RosterRow, Person),
) -> Result<usize, ReadError> {
    let roster = importing(pool, &snapshot.id).await?;
    let mut lookups = importing(pool, &snapshot.id).await?;
    let mut reader = RosterReader::start(roster, desired::select(relation, BY_QUEUE), false);
    let merged = async {
        let mut count = 0;
        while let Some(batch) = reader.batches.recv().await {
            let batch = batch.map_err(Merge::Roster)?;
            count += batch.len();
            let mut addresses: Vec<&str> = batch
                .iter()
                .filter_map(|read| read.email.as_ref().map(Email::as_str))
                .collect();
            addresses.sort_unstable();
            addresses.dedup();
            let mut entries: HashMap<String, Vec<LedgerEntry>> = HashMap::new();
            for entry in ledger::of_emails(&mut *lookups, target, &addresses).await? {
                entries
                    .entry(entry.email.as_str().to_owned())
                    .or_default()
                    .push(entry);
            }
            let found = users::of_emails(&mut *lookups, target, &addresses).await?;
            for read in batch {
                let person = match &read.email {
                    Some(email) => person(
                        entries.get(email.as_str()).cloned().unwrap_or_default(),
                        found.get(email.as_str()).copied(),
                    ),
                    None => Person::default(),
                };
                each(read.row, person);
            }
        }
        Ok::<usize, Merge>(count)
    }
    .await;
    drop(lookups);
    reader.finish(merged, relation).await
}

/// Hands every roster row's address as written and `not_before` to `each`, in the create
/// queue's order, reading those two columns alone (an index of the roster table holds them,
/// so the table itself need not be read): for a plan whose every row was found to be a create.
/// Returns how many rows there were.
pub async fn addresses_queued(
    pool: &PgPool,
    snapshot: &Snapshot,
    relation: &str,
    mut each: impl FnMut(&str, Option<chrono::DateTime<chrono::Utc>>),
) -> Result<usize, ReadError> {
    let mut conn = importing(pool, &snapshot.id).await?;
    let sql = format!(
        "SELECT email::text, not_before::timestamptz FROM {}{BY_QUEUE}",
        desired::quote_relation(relation)
    );
    let mut rows = sqlx::query(&sql).persistent(false).fetch(&mut *conn);
    let mut count = 0;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| desired::relation_error(e, relation))?
    {
        count += 1;
        let text: Option<&str> = row.try_get(0)?;
        let not_before = desired::pg_time(&row, 1)
            .ok()
            .flatten()
            .and_then(|t| t.to_utc().ok());
        each(text.unwrap_or_default(), not_before);
    }
    Ok(count)
}

/// `deleted`: whether the address is a known user's (`Some`) and whether Clerk deleted them.
fn person(entries: Vec<LedgerEntry>, deleted: Option<bool>) -> Person {
    Person::of(entries, deleted == Some(false), deleted == Some(true))
}
