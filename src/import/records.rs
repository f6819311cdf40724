//! Splits CSV text into records, each with the physical line it starts on.
//!
//! `csv_core` does the quoting; the line numbers are counted here because a record's start
//! has to skip the blank lines and the `\n` of a CRLF that precede it, which the parser
//! folds into the following record.

use std::io::{self, BufRead};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A record larger than this is refused: it is almost always a quote left open, and refusing
/// it keeps memory bounded however large the file is.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub enum RecordError {
    Io(io::Error),
    TooLong { line: u64 },
}

impl From<io::Error> for RecordError {
    fn from(error: io::Error) -> Self {
        RecordError::Io(error)
    }
}

/// One record: its fields, unquoted, as bytes.
#[derive(Debug, Default)]
pub struct Record {
    /// The physical line (1-based) the record starts on.
    pub line: u64,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Record {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn field(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1],
        };
        self.bytes.get(start..end)
    }

    pub fn fields(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|index| self.field(index))
    }
}

pub struct Records<R> {
    input: R,
    parser: csv_core::Reader,
    lines: LineCounter,
    at_start: bool,
}

struct LineCounter {
    /// The line of the next byte not yet consumed.
    line: u64,
    /// The last consumed byte was a `\r`: a `\n` right after it ends the same line.
    after_cr: bool,
}

impl<R: BufRead> Records<R> {
    pub fn new(input: R) -> Self {
        Records {
            input,
            parser: csv_core::Reader::new(),
            lines: LineCounter {
                line: 1,
                after_cr: false,
            },
            at_start: true,
        }
    }

    /// Reads the next record into `record`; `false` at the end of the input.
    pub fn read(&mut self, record: &mut Record) -> Result<bool, RecordError> {
        if self.at_start {
            self.at_start = false;
            if self.input.fill_buf()?.starts_with(UTF8_BOM) {
                self.input.consume(UTF8_BOM.len());
            }
        }
        let Record { line, bytes, ends } = record;
        *line = 0;
        // The buffers are used at their full length while parsing and cut to what was
        // written afterwards, so their allocations are reused from record to record.
        bytes.resize(bytes.capacity().max(256), 0);
        ends.resize(ends.capacity().max(16), 0);
        let (mut written, mut ended) = (0, 0);
        let found = loop {
            let input = self.input.fill_buf()?;
            let (state, read, out, end) =
                self.parser
                    .read_record(input, &mut bytes[written..], &mut ends[ended..]);
            let consumed = &input[..read];
            self.lines.count(consumed, line);
            self.input.consume(read);
            written += out;
            ended += end;
            if written > MAX_RECORD_BYTES {
                return Err(RecordError::TooLong {
                    line: if *line == 0 { self.lines.line } else { *line },
                });
            }
            match state {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => bytes.resize(bytes.len() * 2, 0),
                csv_core::ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                csv_core::ReadRecordResult::Record => break true,
                csv_core::ReadRecordResult::End => break false,
            }
        };
        bytes.truncate(written);
        ends.truncate(ended);
        if *line == 0 {
            *line = self.lines.line;
        }
        Ok(found)
    }
}

impl LineCounter {
    /// Advances the line count over consumed bytes, and notes the line of the first byte
    /// that belongs to the record (anything but a line break) if it is not known yet.
    fn count(&mut self, consumed: &[u8], start: &mut u64) {
        for &byte in consumed {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' => self.line += 1,
                b'\r' => {
                    self.line += 1;
                    self.after_cr = true;
                }
                _ => {
                    self.after_cr = false;
                    if *start == 0 {
                        *start = self.line;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<(u64, Vec<String>)> {
        let mut records = Records::new(text.as_bytes());
        let mut record = Record::default();
        let mut out = Vec::new();
        while records.read(&mut record).unwrap() {
            let fields = record
                .fields()
                .map(|f| String::from_utf8(f.to_vec()).unwrap())
                .collect();
            out.push((record.line, fields));
        }
        out
    }

    fn lines(text: &str) -> Vec<u64> {
        parse(text).into_iter().map(|(line, _)| line).collect()
    }

    #[test]
    fn records_know_the_line_they_start_on_whatever_the_line_ends() {
        assert_eq!(lines("email\na\nb\nc\n"), [1, 2, 3, 4]);
        assert_eq!(lines("email\r\na\r\nb\r\nc\r\n"), [1, 2, 3, 4]);
        assert_eq!(lines("email\ra\rb\r"), [1, 2, 3]);
        assert_eq!(lines("email\n\na\n\n\nb\nc"), [1, 3, 6, 7]);
        assert_eq!(lines("email\r\n\r\na\r\n\r\nb\r\nc"), [1, 3, 5, 6]);
        assert_eq!(lines("\n\nemail\na\n"), [3, 4]);
    }

    #[test]
    fn a_quoted_field_may_hold_commas_quotes_and_line_breaks() {
        let parsed = parse("email,x\na,\"1\n2,\"\"3\"\"\"\nb,2\n\"c\r\nd\",3\n");
        assert_eq!(
            parsed,
            vec![
                (1, vec!["email".to_owned(), "x".to_owned()]),
                (2, vec!["a".to_owned(), "1\n2,\"3\"".to_owned()]),
                (4, vec!["b".to_owned(), "2".to_owned()]),
                (5, vec!["c\r\nd".to_owned(), "3".to_owned()]),
            ]
        );
    }

    #[test]
    fn a_bom_is_dropped() {
        let parsed = parse("\u{feff}email\nann@example.com\n");
        assert_eq!(parsed[0].1, vec!["email".to_owned()]);
        let parsed = parse("\u{feff}\"email\"\r\nann@example.com\r\n");
        assert_eq!(parsed[0].1, vec!["email".to_owned()]);
        assert_eq!(parsed[1].0, 2);
    }

    #[test]
    fn large_records_grow_the_buffers() {
        let wide: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
        let long = "x".repeat(10_000);
        let text = format!("{}\n{long},y\n", wide.join(","));
        let parsed = parse(&text);
        assert_eq!(parsed[0].1.len(), 100);
        assert_eq!(parsed[1].1, vec![long, "y".to_owned()]);
    }

    #[test]
    fn a_record_too_large_to_be_real_is_refused() {
        let text = format!("email\n\"{}\n", "x".repeat(MAX_RECORD_BYTES + 10));
        let mut records = Records::new(text.as_bytes());
        let mut record = Record::default();
        assert!(records.read(&mut record).unwrap());
        assert!(matches!(
            records.read(&mut record),
            Err(RecordError::TooLong { line: 2 })
        ));
    }
}
