//! The history file: append before the decision takes effect, rotate at 16 MiB keeping one
//! old file, read back from a time on, follow as it grows.
//!
//! `append` writes the whole line with one `write_all`, then `sync_data`: when it returns
//! the line is on disk, so the controller may act. A crash can at worst tear the last
//! line; readers skip an unterminated last line, the next process cuts it off before it
//! appends, and any other bad line is reported with its file and number, since a decision
//! log that silently drops records is worse than none.
//! Rotation renames the file to `<service>.history.jsonl.1` (replacing the previous old
//! one) and syncs the directory before the new file is written, so at most two files exist.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::record::Entry;

/// The size at which the history file is rotated.
pub(crate) const ROTATE_AT: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum EvidenceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: not a history record: {source}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{text:?} is not an RFC 3339 time (like 2026-11-30T14:30:00Z)")]
    Since { text: String },
    #[error("a history record could not be encoded: {0}")]
    Encode(serde_json::Error),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> EvidenceError + '_ {
    move |source| EvidenceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `state_dir/<service>.history.jsonl`.
pub(crate) fn history_path(state_dir: &Path, service: &str) -> PathBuf {
    state_dir.join(format!("{service}.history.jsonl"))
}

/// The rotated file next to `path`: `<path>.1`.
pub(crate) fn old_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Parses a `since` argument.
pub(crate) fn parse_since(text: &str) -> Result<OffsetDateTime, EvidenceError> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| EvidenceError::Since {
        text: text.to_string(),
    })
}

/// The open history file of one service.
#[derive(Debug)]
pub(crate) struct HistoryLog {
    path: PathBuf,
    file: File,
    /// The bytes of whole records: what the file holds, or will once a torn tail is cut.
    size: u64,
    rotate_at: u64,
    /// A failed write may have left part of its line, and cutting it off failed too:
    /// cut it before the next line, or that line would be glued to it.
    torn: bool,
}

impl HistoryLog {
    /// Opens (creating it if needed) the history file of `service` in `state_dir`.
    pub(crate) fn open(state_dir: &Path, service: &str) -> Result<HistoryLog, EvidenceError> {
        HistoryLog::open_path(history_path(state_dir, service), ROTATE_AT)
    }

    /// Opens `path`, rotating when a line would take it past `rotate_at` bytes. A last line
    /// torn by a crash is cut off first: the next record would be glued to it, and the
    /// file would no longer read back.
    pub(crate) fn open_path(path: PathBuf, rotate_at: u64) -> Result<HistoryLog, EvidenceError> {
        let file = open_append(&path)?;
        let size = whole_lines(&path)?;
        let mut log = HistoryLog {
            path,
            file,
            size,
            rotate_at,
            torn: true,
        };
        log.cut_torn_tail()?;
        Ok(log)
    }

    /// Cuts the file back to its whole records, when something may follow them.
    fn cut_torn_tail(&mut self) -> Result<(), EvidenceError> {
        if !self.torn {
            return Ok(());
        }
        let on_disk = self.file.metadata().map_err(io_error(&self.path))?.len();
        if on_disk != self.size {
            self.file
                .set_len(self.size)
                .and_then(|()| self.file.sync_data())
                .map_err(io_error(&self.path))?;
            tracing::warn!(path = %self.path.display(), "cut a torn last line ({} bytes) off the history", on_disk - self.size);
        }
        self.torn = false;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry; when this returns `Ok` the line is on disk.
    pub(crate) fn append(&mut self, entry: &Entry) -> Result<(), EvidenceError> {
        let mut line = serde_json::to_vec(entry).map_err(EvidenceError::Encode)?;
        line.push(b'\n');
        self.cut_torn_tail()?;
        if self.size > 0 && self.size + line.len() as u64 > self.rotate_at {
            self.rotate()?;
        }
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            // A half-written line would glue itself to the next one: cut it off, so the
            // file keeps only whole records; if that fails too (the disk may be what
            // failed), the next append tries again first.
            self.torn = self.file.set_len(self.size).is_err();
            return Err(io_error(&self.path)(error));
        }
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), EvidenceError> {
        let old = old_path(&self.path);
        fs::rename(&self.path, &old).map_err(io_error(&self.path))?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(dir))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The length of `path`'s whole lines: all of it, or up to the last newline when a crash
/// tore its last line (0 for a missing file).
fn whole_lines(path: &Path) -> Result<u64, EvidenceError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    if size == 0 {
        return Ok(0);
    }
    let mut last = [0u8];
    file.seek(SeekFrom::End(-1))
        .and_then(|_| io::Read::read_exact(&mut file, &mut last))
        .map_err(io_error(path))?;
    if last[0] == b'\n' {
        return Ok(size);
    }
    let mut text = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| io::Read::read_to_end(&mut file, &mut text))
        .map_err(io_error(path))?;
    Ok(text
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at as u64 + 1))
}

fn open_append(path: &Path) -> Result<File, EvidenceError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error(path))
}

/// Every entry at or after `since` (all without it), the rotated file first. Missing
/// files hold nothing.
pub(crate) fn read_since(
    path: &Path,
    since: Option<OffsetDateTime>,
) -> Result<Vec<Entry>, EvidenceError> {
    read_history(path, since).map(|(entries, _)| entries)
}

/// Where a reading of the history ended: the current file, by inode, and the offset
/// after its last whole line. A [`Follower`] goes on from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    inode: u64,
    offset: u64,
}

/// [`read_since`], and where it ended. The current file is opened first: rotated after
/// that, it is the `.1` then, which is not read a second time (the rotation would
/// otherwise leave the old `.1` read and the rotated records missed).
pub(crate) fn read_history(
    path: &Path,
    since: Option<OffsetDateTime>,
) -> Result<(Vec<Entry>, Position), EvidenceError> {
    let current = open_existing(path)?;
    let inode = match &current {
        Some(file) => file.metadata().map_err(io_error(path))?.ino(),
        None => 0,
    };
    let mut entries = Vec::new();
    let old = old_path(path);
    if let Some(file) = open_existing(&old)? {
        if file.metadata().map_err(io_error(&old))?.ino() != inode {
            read_open(file, &old, 0, &mut entries)?;
        }
    }
    let offset = match current {
        Some(file) => read_open(file, path, 0, &mut entries)?,
        None => 0,
    };
    if let Some(since) = since {
        entries.retain(|entry| entry.at >= since);
    }
    Ok((entries, Position { inode, offset }))
}

fn open_existing(path: &Path) -> Result<Option<File>, EvidenceError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(path)(error)),
    }
}

/// Reads whole lines of `path` from byte `offset`, appending the entries; returns the
/// offset after the last whole line.
fn read_file(path: &Path, offset: u64, entries: &mut Vec<Entry>) -> Result<u64, EvidenceError> {
    match open_existing(path)? {
        Some(file) => read_open(file, path, offset, entries),
        None => Ok(offset),
    }
}

/// [`read_file`] on a file already open.
fn read_open(
    mut file: File,
    path: &Path,
    offset: u64,
    entries: &mut Vec<Entry>,
) -> Result<u64, EvidenceError> {
    file.seek(SeekFrom::Start(offset)).map_err(io_error(path))?;
    let mut reader = BufReader::new(file);
    let mut position = offset;
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(io_error(path))?;
        if read == 0 || line.last() != Some(&b'\n') {
            // The end, or a line still being written (or torn by a crash).
            return Ok(position);
        }
        number += 1;
        position += read as u64;
        let text = &line[..line.len() - 1];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry = serde_json::from_slice(text).map_err(|source| EvidenceError::Corrupt {
            path: path.to_path_buf(),
            line: number,
            source,
        })?;
        entries.push(entry);
    }
}

/// Follows the history file as it grows (`cutover history --follow`), across rotations.
#[derive(Debug)]
pub(crate) struct Follower {
    path: PathBuf,
    offset: u64,
    /// The inode read from: a new one means the file was rotated.
    inode: u64,
}

impl Follower {
    /// Starts at the current end of the file: only new entries will be returned.
    #[cfg(test)]
    pub(crate) fn from_end(path: &Path) -> Follower {
        let (offset, inode) = fs::metadata(path).map_or((0, 0), |m| (m.len(), m.ino()));
        Follower::at(path, Position { inode, offset })
    }

    /// Starts where a [`read_history`] ended: every entry written after what it read.
    pub(crate) fn at(path: &Path, position: Position) -> Follower {
        Follower {
            path: path.to_path_buf(),
            offset: position.offset,
            inode: position.inode,
        }
    }

    /// The entries written since the last poll.
    pub(crate) fn poll(&mut self) -> Result<Vec<Entry>, EvidenceError> {
        let mut entries = Vec::new();
        let (size, inode) = fs::metadata(&self.path).map_or((0, 0), |m| (m.len(), m.ino()));
        if inode != self.inode || size < self.offset {
            // Rotated: finish the old file where we were, then start the new one.
            if self.inode != 0 {
                read_file(&old_path(&self.path), self.offset, &mut entries)?;
            }
            self.offset = 0;
            self.inode = inode;
        }
        self.offset = read_file(&self.path, self.offset, &mut entries)?;
        Ok(entries)
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
