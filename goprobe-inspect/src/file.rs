//! Opening files that the user names (binaries, the agent's config, token files) without trusting
//! what they are: a FIFO blocks `open(2)` until a writer comes, and `/dev/zero` or a pipe never
//! ends, so only regular files are read, and small files are read with a size cap.
use std::{
    fs::File,
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

/// `O_NONBLOCK` on Linux (the same value on x86-64 and arm64): `open(2)` of a FIFO returns at
/// once instead of waiting for a writer, so the file type can be checked first. It changes
/// nothing for the regular files that get through.
const O_NONBLOCK: i32 = 0o4000;

/// Open `path` for reading if it is a regular file (symbolic links followed); anything else
/// (a directory, FIFO, socket or device) is an error that says what it is, without blocking.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    if kind.is_dir() {
        return Err(io::ErrorKind::IsADirectory.into());
    }
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a special file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what})"),
    ))
}

/// The whole text of a small regular file (a config, a token), refusing more than `limit`
/// bytes: a file that is not text or not small is a mistake to report, not a reason to run out
/// of memory.
pub fn read_small_text(path: &Path, limit: u64) -> io::Result<String> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells "exactly the limit" from "more" (the length in the metadata
    // could change while reading).
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("goprobe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        path
    }

    /// Opening a FIFO with no writer blocked forever; it is refused at once now.
    #[test]
    fn special_files_are_refused_without_blocking() {
        let path = fifo("file-fifo");
        let start = std::time::Instant::now();
        let e = open_regular(&path).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a FIFO)");
        let e = read_small_text(&path, 100).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a FIFO)");
        std::fs::remove_file(&path).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let e = read_small_text(Path::new("/dev/zero"), 100).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a character device)");
        let e = open_regular(Path::new("/")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory);
    }

    #[test]
    fn small_files_only() {
        let path = std::env::temp_dir().join(format!("goprobe-file-small-{}", std::process::id()));
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_small_text(&path, 10).unwrap(), "0123456789");
        let e = read_small_text(&path, 9).unwrap_err();
        assert_eq!(e.to_string(), "larger than 9 bytes");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_small_text(&path, 10).unwrap_err().to_string(),
            "not UTF-8 text"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
