//! The one chunked-body state machine (RFC 9112 §7.1), with one set of limits, used by
//! both sides: the framing guard follows a client's chunked request body through the
//! bytes hyper reads (`follow`), and the backend client decodes a chunked response body
//! out of its read buffer (`decode`).
//!
//! Limits: a chunk size has at most 16 significant hex digits (any `u64`), after any
//! number of leading zeros, exactly as hyper accepts (it checks for overflow, not length:
//! the guard in front of it must follow every body hyper follows); a trailer section at
//! most `MAX_HEAD` bytes.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::tokens::is_hop_by_hop;
use super::MAX_HEAD;

/// The most significant hex digits of a chunk size: 16 fill a `u64`, so the size never
/// overflows.
pub(crate) const MAX_SIZE_DIGITS: u8 = 16;
const MAX_TRAILERS: usize = 32;

/// The chunked framing is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct Malformed;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Reading the hex size; `digits` so far, leading zeros counting as one.
    Size {
        size: u64,
        digits: u8,
    },
    /// After `;` (or whitespace): skipping chunk extensions to the end of the line.
    Extension {
        size: u64,
    },
    /// Saw `\r` after the size line.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines, then an empty line.
    TrailerLineStart,
    TrailerLine,
    TrailerEndLf,
    /// The body is over.
    End,
}

impl Chunk {
    pub(crate) const START: Chunk = Chunk::Size { size: 0, digits: 0 };

    /// The state after one byte outside chunk data; `None` when the framing is broken.
    #[inline]
    pub(crate) fn next(self, byte: u8) -> Option<Chunk> {
        Some(match (self, byte) {
            (Chunk::Size { size: 0, .. }, b) if b.is_ascii_hexdigit() => Chunk::Size {
                size: u64::from((b as char).to_digit(16).unwrap_or(0)),
                digits: 1,
            },
            (Chunk::Size { size, digits }, b)
                if b.is_ascii_hexdigit() && digits < MAX_SIZE_DIGITS =>
            {
                Chunk::Size {
                    size: size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0)),
                    digits: digits + 1,
                }
            }
            (Chunk::Size { size, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                Chunk::Extension { size }
            }
            (Chunk::Size { size, digits }, b'\r') if digits > 0 => Chunk::SizeLf { size },
            (Chunk::Size { size, digits }, b'\n') if digits > 0 => after_size(size),
            (Chunk::Extension { size }, b'\r') => Chunk::SizeLf { size },
            (Chunk::Extension { size }, b'\n') => after_size(size),
            (Chunk::Extension { size }, _) => Chunk::Extension { size },
            (Chunk::SizeLf { size }, b'\n') => after_size(size),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataCr | Chunk::DataLf, b'\n') => Chunk::START,
            (Chunk::TrailerLineStart, b'\r') => Chunk::TrailerEndLf,
            (Chunk::TrailerLineStart | Chunk::TrailerEndLf, b'\n') => Chunk::End,
            (Chunk::TrailerLine, b'\n') => Chunk::TrailerLineStart,
            (Chunk::TrailerLineStart | Chunk::TrailerLine, _) => Chunk::TrailerLine,
            _ => return None,
        })
    }

    /// In `Data`: takes up to `available` bytes of it; returns how many, and the state
    /// after them.
    #[inline]
    fn take_data(remaining: u64, available: usize) -> (usize, Chunk) {
        let take = remaining.min(available as u64);
        let next = if take == remaining {
            Chunk::DataCr
        } else {
            Chunk::Data {
                remaining: remaining - take,
            }
        };
        (take as usize, next)
    }
}

/// After a size line: the data of a chunk, or the trailers after the last one.
fn after_size(size: u64) -> Chunk {
    if size == 0 {
        Chunk::TrailerLineStart
    } else {
        Chunk::Data { remaining: size }
    }
}

/// Follows a chunked body through `bytes` without keeping them; returns how many bytes
/// belong to the body (fewer than `bytes.len()` only when it ends inside them).
pub(crate) fn follow(state: &mut Chunk, bytes: &[u8]) -> Result<usize, Malformed> {
    let mut at = 0;
    while at < bytes.len() && *state != Chunk::End {
        if let Chunk::Data { remaining } = *state {
            let (take, next) = Chunk::take_data(remaining, bytes.len() - at);
            at += take;
            *state = next;
            continue;
        }
        *state = state.next(bytes[at]).ok_or(Malformed)?;
        at += 1;
    }
    Ok(at)
}

/// What decoding the buffered bytes gave.
#[derive(Debug)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    NeedMore,
}

/// Decodes as much of a chunked body as `buf` holds, consuming it.
pub(crate) fn decode(buf: &mut BytesMut, state: &mut Chunk) -> Result<Decoded, Malformed> {
    loop {
        if let Chunk::Data { remaining } = *state {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let (take, next) = Chunk::take_data(remaining, buf.len());
            *state = next;
            return Ok(Decoded::Data(buf.split_to(take).freeze()));
        }
        if *state == Chunk::TrailerLineStart {
            return decode_trailers(buf, state);
        }
        let Some(&byte) = buf.first() else {
            return Ok(Decoded::NeedMore);
        };
        buf.advance(1);
        *state = state.next(byte).ok_or(Malformed)?;
    }
}

/// The trailer section after the last chunk, parsed whole: fields, then an empty line.
fn decode_trailers(buf: &mut BytesMut, state: &mut Chunk) -> Result<Decoded, Malformed> {
    for end in [&b"\r\n"[..], b"\n"] {
        if buf.starts_with(end) {
            buf.advance(end.len());
            *state = Chunk::End;
            return Ok(Decoded::End);
        }
    }
    if buf.len() < 2 {
        return Ok(Decoded::NeedMore);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut trailers = HeaderMap::new();
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes());
                let value = HeaderValue::from_bytes(field.value);
                if let (Ok(name), Ok(value)) = (name, value) {
                    if !is_hop_by_hop(&name, false) {
                        trailers.append(name, value);
                    }
                }
            }
            buf.advance(len);
            *state = Chunk::End;
            Ok(Decoded::Trailers(trailers))
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => Ok(Decoded::NeedMore),
        _ => Err(Malformed),
    }
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
