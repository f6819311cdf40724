//! A query's rows as `COPY (query) TO STDOUT (FORMAT binary)` sends them, parsed from the
//! bytes. A read of a whole table (the roster, the ledger, the known users) costs the driver
//! a message and a row decoded into its own allocation for every row; the copy hands over
//! the bytes, and each row's columns are read in place.
//!
//! The format (PostgreSQL's "Binary Format" of `COPY`): an 11-byte signature, a 32-bit flags
//! field, a 32-bit header-extension length and that many bytes; then each tuple as a 16-bit
//! count of fields followed, for each field, by a 32-bit length (-1 for NULL) and that many
//! bytes, each value in its type's binary form; then a 16-bit -1. Messages need not align with
//! tuples: the bytes are read as one stream.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::TryStreamExt;
use sqlx::PgConnection;

/// The first bytes of a binary copy.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The most fields a tuple may have here: the widest query read by copy has 15.
const MAX_FIELDS: usize = 32;

/// One tuple's fields, each a value's bytes in its type's binary form, or NULL.
pub struct Tuple<'a> {
    fields: &'a [Option<&'a [u8]>],
}

impl<'a> Tuple<'a> {
    /// A tuple of these fields' bytes (a row the driver decoded, read the same way: see
    /// [`row_fields`]).
    pub fn new(fields: &'a [Option<&'a [u8]>]) -> Tuple<'a> {
        Tuple { fields }
    }

    /// How many fields the tuple has.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the tuple has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The bytes of field `index` (`None` for NULL); an index past the tuple's fields is an
    /// error.
    pub fn bytes(&self, index: usize) -> Result<Option<&'a [u8]>, String> {
        self.fields.get(index).copied().ok_or_else(|| {
            format!(
                "the row has {} columns, not {}",
                self.fields.len(),
                index + 1
            )
        })
    }

    /// A `text` field (its binary form is its UTF-8).
    pub fn text(&self, index: usize) -> Result<Option<&'a str>, String> {
        self.bytes(index)?
            .map(|bytes| std::str::from_utf8(bytes).map_err(|e| e.to_string()))
            .transpose()
    }

    /// A `text` field that may not be NULL.
    pub fn required_text(&self, index: usize) -> Result<&'a str, String> {
        self.text(index)?
            .ok_or_else(|| format!("column {} is NULL", index + 1))
    }

    /// A field of a fixed width (an integer, a time, a boolean).
    fn fixed<const N: usize>(&self, index: usize) -> Result<Option<[u8; N]>, String> {
        self.bytes(index)?
            .map(|bytes| {
                bytes
                    .try_into()
                    .map_err(|_| format!("a value of {} bytes, not {N}", bytes.len()))
            })
            .transpose()
    }

    /// A `bigint` field.
    pub fn i64(&self, index: usize) -> Result<Option<i64>, String> {
        Ok(self.fixed::<8>(index)?.map(i64::from_be_bytes))
    }

    /// An `integer` field.
    pub fn i32(&self, index: usize) -> Result<Option<i32>, String> {
        Ok(self.fixed::<4>(index)?.map(i32::from_be_bytes))
    }

    /// A `boolean` field.
    pub fn bool(&self, index: usize) -> Result<Option<bool>, String> {
        Ok(self.fixed::<1>(index)?.map(|[byte]| byte != 0))
    }
}

/// The rows of `COPY (select) TO STDOUT (FORMAT binary)` on a connection, read a message at a
/// time. `select` must carry its values in its text: a copy takes no bound parameters. A
/// stream that breaks the format fails as a protocol error. The connection is not fit to use
/// again unless the rows were read to their end, which the callers' connections, closed when
/// dropped, see to.
pub struct CopyOut<'c> {
    messages: BoxStream<'c, Result<Bytes, sqlx::Error>>,
    parser: Parser,
}

impl<'c> CopyOut<'c> {
    pub async fn start(conn: &'c mut PgConnection, select: &str) -> Result<Self, sqlx::Error> {
        let statement = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
        let messages = conn.copy_out_raw(&statement).await?;
        Ok(CopyOut {
            messages,
            parser: Parser::default(),
        })
    }

    /// Hands the tuples the next message completes to `each`, in order; `false` once the
    /// rows have ended.
    pub async fn next(&mut self, mut each: impl FnMut(&Tuple<'_>)) -> Result<bool, sqlx::Error> {
        match self.messages.try_next().await? {
            Some(chunk) => {
                self.parser.feed(&chunk, &mut each).map_err(malformed)?;
                Ok(true)
            }
            None => {
                std::mem::take(&mut self.parser)
                    .finish()
                    .map_err(malformed)?;
                Ok(false)
            }
        }
    }
}
fn malformed(reason: String) -> sqlx::Error {
    sqlx::Error::Protocol(format!(
        "a binary COPY stream that cannot be read: {reason}"
    ))
}

/// Where the reading of the stream is.
#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum Stage {
    /// Before the header (or inside it).
    #[default]
    Header,
    Tuples,
    /// After the trailer.
    Ended,
}

/// The bytes of a binary copy read as they arrive: whole tuples are handed over, and an
/// incomplete one waits in `pending` for the next chunk.
#[derive(Default)]
struct Parser {
    stage: Stage,
    pending: Vec<u8>,
}

impl Parser {
    /// Reads the tuples `chunk` completes.
    fn feed(&mut self, chunk: &[u8], each: &mut impl FnMut(&Tuple<'_>)) -> Result<(), String> {
        if self.pending.is_empty() {
            // The usual case: a message holds whole tuples, read where it lies.
            let used = self.read(chunk, each)?;
            self.pending.extend_from_slice(&chunk[used..]);
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        let mut pending = std::mem::take(&mut self.pending);
        let used = self.read(&pending, each)?;
        pending.drain(..used);
        self.pending = pending;
        Ok(())
    }

    /// Reads what `bytes` holds whole; how many bytes that was.
    fn read(&mut self, bytes: &[u8], each: &mut impl FnMut(&Tuple<'_>)) -> Result<usize, String> {
        let mut at = 0;
        if self.stage == Stage::Header {
            let Some(used) = header(bytes)? else {
                return Ok(0);
            };
            at = used;
            self.stage = Stage::Tuples;
        }
        let mut fields: [Option<&[u8]>; MAX_FIELDS] = [None; MAX_FIELDS];
        while at < bytes.len() {
            if self.stage == Stage::Ended {
                return Err("bytes after the trailer".to_owned());
            }
            let Some(count) = be_i16(bytes, at) else {
                break;
            };
            if count == -1 {
                self.stage = Stage::Ended;
                at += 2;
                continue;
            }
            let count = usize::try_from(count)
                .ok()
                .filter(|count| *count <= MAX_FIELDS)
                .ok_or_else(|| format!("a tuple of {count} fields"))?;
            let Some(used) = tuple(&bytes[at + 2..], count, &mut fields)? else {
                break;
            };
            each(&Tuple {
                fields: &fields[..count],
            });
            at += 2 + used;
        }
        Ok(at)
    }

    /// Whether the stream ended where a binary copy ends.
    fn finish(self) -> Result<(), String> {
        match (self.stage, self.pending.is_empty()) {
            (Stage::Ended, true) => Ok(()),
            (Stage::Ended, false) => Err("bytes after the trailer".to_owned()),
            (_, false) => Err(format!(
                "{} bytes of an incomplete tuple at the end",
                self.pending.len()
            )),
            (_, true) => Err("no trailer".to_owned()),
        }
    }
}

/// The header's length, once `bytes` holds it whole.
fn header(bytes: &[u8]) -> Result<Option<usize>, String> {
    let fixed = SIGNATURE.len() + 8;
    if bytes.len() < fixed {
        return Ok(None);
    }
    if &bytes[..SIGNATURE.len()] != SIGNATURE {
        return Err("no binary COPY signature".to_owned());
    }
    let extension = be_i32(bytes, SIGNATURE.len() + 4)
        .and_then(|length| usize::try_from(length).ok())
        .ok_or("a negative header extension")?;
    let whole = fixed
        .checked_add(extension)
        .ok_or("a header extension too long")?;
    Ok((bytes.len() >= whole).then_some(whole))
}

/// Reads `count` fields from `bytes` into `fields`; how many bytes they took, once `bytes`
/// holds them whole.
fn tuple<'a>(
    bytes: &'a [u8],
    count: usize,
    fields: &mut [Option<&'a [u8]>; MAX_FIELDS],
) -> Result<Option<usize>, String> {
    let mut at = 0;
    for field in fields.iter_mut().take(count) {
        let Some(length) = be_i32(bytes, at) else {
            return Ok(None);
        };
        at += 4;
        if length == -1 {
            *field = None;
            continue;
        }
        let length = usize::try_from(length).map_err(|_| format!("a field of length {length}"))?;
        let Some(value) = bytes.get(at..at + length) else {
            return Ok(None);
        };
        *field = Some(value);
        at += length;
    }
    Ok(Some(at))
}

fn be_i16(bytes: &[u8], at: usize) -> Option<i16> {
    let bytes: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
    Some(i16::from_be_bytes(bytes))
}

fn be_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let bytes: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

/// The fields of a row the driver read, each a value's bytes in its type's binary form (as a
/// copy sends them) or NULL, for [`Tuple::new`]: one decoding serves both reads. The driver
/// asks for every value in binary; one that came otherwise is given as a byte no decoding
/// takes (0xFF), so that it names the column rather than being misread.
pub fn row_fields(row: &sqlx::postgres::PgRow) -> Vec<Option<&[u8]>> {
    use sqlx::postgres::PgValueFormat;
    use sqlx::{Row as _, ValueRef as _};
    (0..row.len())
        .map(|index| match row.try_get_raw(index) {
            Ok(value) if value.is_null() => None,
            Ok(value) if value.format() == PgValueFormat::Binary => value.as_bytes().ok(),
            _ => Some(&[0xff][..]),
        })
        .collect()
}

/// A SQL string literal of `text`, for a statement that takes no bound parameters (the
/// database's `standard_conforming_strings`, on since PostgreSQL 9.1, reads a backslash as
/// itself).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(tuples: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for tuple in tuples {
            out.extend_from_slice(&(tuple.len() as i16).to_be_bytes());
            for field in tuple {
                match field {
                    Some(bytes) => {
                        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn read_in_chunks(bytes: &[u8], size: usize) -> Result<Vec<Vec<Option<Vec<u8>>>>, String> {
        let mut parser = Parser::default();
        let mut seen = Vec::new();
        for chunk in bytes.chunks(size) {
            parser.feed(chunk, &mut |tuple: &Tuple<'_>| {
                seen.push(
                    (0..tuple.len())
                        .map(|i| tuple.bytes(i).ok().flatten().map(<[u8]>::to_vec))
                        .collect(),
                );
            })?;
        }
        parser.finish()?;
        Ok(seen)
    }

    #[test]
    fn tuples_are_read_whole_however_the_bytes_are_cut() {
        let tuples = vec![
            vec![Some(&b"a@example.com"[..]), None, Some(&[0u8, 0, 0, 7][..])],
            vec![Some(&b""[..]), Some(&b"\x01"[..]), None],
        ];
        let bytes = encode(&tuples);
        let expected: Vec<Vec<Option<Vec<u8>>>> = tuples
            .iter()
            .map(|t| t.iter().map(|f| f.map(<[u8]>::to_vec)).collect())
            .collect();
        for size in 1..=bytes.len() {
            assert_eq!(
                read_in_chunks(&bytes, size),
                Ok(expected.clone()),
                "size {size}"
            );
        }
    }

    #[test]
    fn a_stream_that_breaks_the_format_is_named_not_read() {
        let good = encode(&[vec![Some(&b"x"[..])]]);
        let mut bad_signature = good.clone();
        bad_signature[0] = b'Q';
        assert_eq!(
            read_in_chunks(&bad_signature, 64),
            Err("no binary COPY signature".to_owned())
        );
        assert_eq!(
            read_in_chunks(&good[..good.len() - 2], 64),
            Err("no trailer".to_owned())
        );
        assert_eq!(
            read_in_chunks(&good[..good.len() - 3], 64),
            Err("6 bytes of an incomplete tuple at the end".to_owned())
        );
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            read_in_chunks(&extra, 64),
            Err("bytes after the trailer".to_owned())
        );
        let mut wide = SIGNATURE.to_vec();
        wide.extend_from_slice(&[0; 8]);
        wide.extend_from_slice(&40i16.to_be_bytes());
        assert_eq!(
            read_in_chunks(&wide, 64),
            Err("a tuple of 40 fields".to_owned())
        );
        let mut negative = SIGNATURE.to_vec();
        negative.extend_from_slice(&[0; 8]);
        negative.extend_from_slice(&1i16.to_be_bytes());
        negative.extend_from_slice(&(-7i32).to_be_bytes());
        assert_eq!(
            read_in_chunks(&negative, 64),
            Err("a field of length -7".to_owned())
        );
    }

    #[test]
    fn fields_are_read_in_their_binary_forms_and_a_wrong_width_is_named() {
        let id = 42i64.to_be_bytes();
        let fields = [
            Some(&id[..]),
            Some(&b"text"[..]),
            Some(&[1u8][..]),
            Some(&[0u8, 1][..]),
            None,
        ];
        let tuple = Tuple { fields: &fields };
        assert_eq!(tuple.i64(0), Ok(Some(42)));
        assert_eq!(tuple.text(1), Ok(Some("text")));
        assert_eq!(tuple.bool(2), Ok(Some(true)));
        assert_eq!(tuple.i32(3), Err("a value of 2 bytes, not 4".to_owned()));
        assert_eq!(tuple.text(4), Ok(None));
        assert_eq!(tuple.required_text(4), Err("column 5 is NULL".to_owned()));
        assert_eq!(
            tuple.bytes(5),
            Err("the row has 5 columns, not 6".to_owned())
        );
        let invalid = [Some(&[0xffu8][..])];
        assert!(Tuple { fields: &invalid }.text(0).is_err());
    }

    #[test]
    fn a_literal_doubles_its_quotes() {
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(literal("a\\b"), "'a\\b'");
    }
}
