//! Reading the files an operator names (the `--config` file, an `--env-file`, the secret key
//! file) with a bound: a path that is a device, an endless stream or a huge file ends in an
//! error naming the limit, after reading at most the limit, rather than in a process that
//! fills its memory; a FIFO is refused before it is opened, as opening one waits for a writer.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// The most read from the `--config` file.
pub const CONFIG_FILE_LIMIT: Limit = Limit::new(1024 * 1024, "a config file");
/// The most read from an `--env-file`.
pub const ENV_FILE_LIMIT: Limit = Limit::new(1024 * 1024, "an environment file");
/// The most read from `clerk.secret_key_file` (a Clerk key is about 50 bytes).
pub const SECRET_FILE_LIMIT: Limit = Limit::new(4 * 1024, "a secret key file");

/// How many bytes may be read from one kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    /// The kind of file, as a sentence names it: "a config file".
    pub of: &'static str,
}

impl Limit {
    pub const fn new(bytes: u64, of: &'static str) -> Limit {
        Limit { bytes, of }
    }
}

/// Why a file was not read. Its text never quotes the file's content.
#[derive(Debug)]
pub enum ReadError {
    TooLarge(Limit),
    Directory,
    /// A FIFO or a socket: `kind` says which.
    NotAFile(&'static str),
    NotUtf8,
    Io(std::io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::TooLarge(limit) => write!(
                f,
                "it is larger than {}, the limit for {}",
                show_bytes(limit.bytes),
                limit.of
            ),
            ReadError::Directory => f.write_str("it is a directory, not a file"),
            ReadError::NotAFile(kind) => {
                write!(f, "it is a {kind}, not a file: name a regular file")
            }
            ReadError::NotUtf8 => f.write_str("it is not UTF-8 text"),
            ReadError::Io(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// `1048576` → `1 MiB`, `4096` → `4 KiB`, others in bytes.
fn show_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes >= KIB * KIB && bytes % (KIB * KIB) == 0 {
        format!("{} MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The text of the file at `path`, if it is at most `limit` bytes of UTF-8. Never reads more
/// than one byte past the limit, and never opens a FIFO or a socket.
pub fn read_text(path: &Path, limit: Limit) -> Result<String, ReadError> {
    let metadata = std::fs::metadata(path).map_err(ReadError::Io)?;
    let kind = metadata.file_type();
    if kind.is_dir() {
        return Err(ReadError::Directory);
    }
    if let Some(other) = special_kind(&kind) {
        return Err(ReadError::NotAFile(other));
    }
    if kind.is_file() && metadata.len() > limit.bytes {
        return Err(ReadError::TooLarge(limit));
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(limit.bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit.bytes {
        return Err(ReadError::TooLarge(limit));
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        Some("FIFO (named pipe)")
    } else if kind.is_socket() {
        Some("socket")
    } else {
        None
    }
}

#[cfg(not(unix))]
fn special_kind(_kind: &std::fs::FileType) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "invite-sync-read-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_endless_device_stops_at_the_limit_and_names_it() {
        let error = read_text(Path::new("/dev/zero"), SECRET_FILE_LIMIT).unwrap_err();
        assert!(matches!(error, ReadError::TooLarge(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            "it is larger than 4 KiB, the limit for a secret key file"
        );
        let error = read_text(Path::new("/dev/zero"), ENV_FILE_LIMIT).unwrap_err();
        assert_eq!(
            error.to_string(),
            "it is larger than 1 MiB, the limit for an environment file"
        );
    }

    #[test]
    fn a_file_at_the_limit_is_read_and_one_byte_more_is_refused() {
        let dir = scratch("limit");
        let file = dir.join("f");
        let limit = Limit::new(8, "a test file");
        std::fs::write(&file, "12345678").unwrap();
        assert_eq!(read_text(&file, limit).unwrap(), "12345678");
        std::fs::write(&file, "123456789").unwrap();
        assert!(matches!(
            read_text(&file, limit),
            Err(ReadError::TooLarge(_))
        ));
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_text(&file, limit).unwrap_err().to_string(),
            "it is not UTF-8 text"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_and_a_fifo_are_refused_without_waiting() {
        let dir = scratch("kinds");
        assert_eq!(
            read_text(&dir, CONFIG_FILE_LIMIT).unwrap_err().to_string(),
            "it is a directory, not a file"
        );
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert_eq!(
                read_text(&fifo, CONFIG_FILE_LIMIT).unwrap_err().to_string(),
                "it is a FIFO (named pipe), not a file: name a regular file"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_are_shown_in_the_largest_whole_unit() {
        assert_eq!(show_bytes(1024 * 1024), "1 MiB");
        assert_eq!(show_bytes(4096), "4 KiB");
        assert_eq!(show_bytes(1000), "1000 bytes");
    }
}
