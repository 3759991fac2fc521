//! Property tests of the HTTP/1 framing code (issue 13, fuzzing on stable): the chunked
//! decoder and follower and the head parsers never panic on any bytes, and on valid input
//! they agree with a simple reference encoder, however the bytes are split into reads.
//! `PROPTEST_CASES` raises the number of cases for a longer run.

use bytes::BytesMut;
use http::{Method, StatusCode};
use proptest::prelude::*;

use super::chunked::{decode, follow, Chunk, Decoded};
use super::parse::{parse_response_head, request_head};
use super::Framing;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The reference encoder: chunks in hex sizes (with an extension on some), the last
/// chunk, trailers, the empty line.
fn encode_chunked(chunks: &[Vec<u8>], trailers: &[(String, String)], extension: bool) -> Vec<u8> {
    let mut wire = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        wire.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
        if extension {
            wire.extend_from_slice(b";name=value");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

/// Feeds `wire` to `decode` in the pieces `cuts` make; the data, and the bytes left
/// after the body.
fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let mut state = Chunk::START;
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    for point in points {
        buf.extend_from_slice(&wire[fed..point]);
        fed = point;
        loop {
            match decode(&mut buf, &mut state).map_err(|e| e.to_string())? {
                Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                Decoded::Trailers(_) | Decoded::End => {
                    if state == Chunk::End {
                        buf.extend_from_slice(&wire[fed..]);
                        return Ok((data, buf.to_vec()));
                    }
                }
                Decoded::NeedMore => break,
            }
        }
    }
    Err("the body did not end".into())
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,12}"
}

fn trailer() -> impl Strategy<Value = (String, String)> {
    (token(), "[ -~]{0,20}").prop_map(|(n, v)| (format!("x-{n}"), v.trim().to_string()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chunked_decoding_agrees_with_the_reference(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        trailers in prop::collection::vec(trailer(), 0..4),
        extension in any::<bool>(),
        after in prop::collection::vec(any::<u8>(), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let body = encode_chunked(&chunks, &trailers, extension);
        let mut wire = body.clone();
        wire.extend_from_slice(&after);
        let (data, rest) = decode_in_pieces(&wire, &cuts).map_err(TestCaseError::fail)?;
        prop_assert_eq!(data, chunks.concat());
        prop_assert_eq!(rest, after);

        // `follow` agrees on where the body ends, however the reads are split.
        let mut state = Chunk::START;
        let mut consumed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut from = 0;
        for point in points {
            consumed += follow(&mut state, &wire[from..point]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            from = point;
            if state == Chunk::End {
                break;
            }
        }
        prop_assert_eq!(state, Chunk::End);
        prop_assert_eq!(consumed, body.len());
    }

    #[test]
    fn chunked_code_never_panics_on_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"5\r\n"[..]), Just(&b"0\r\n"[..]), Just(&b"ffffffffffffffff\r\n"[..])],
    ) {
        let mut wire = prefix.to_vec();
        wire.extend_from_slice(&bytes);
        let mut state = Chunk::START;
        let mut buf = BytesMut::from(&wire[..]);
        for _ in 0..wire.len() + 2 {
            match decode(&mut buf, &mut state) {
                Ok(Decoded::NeedMore) | Err(_) => break,
                Ok(_) if state == Chunk::End => break,
                Ok(_) => {}
            }
        }
        let mut state = Chunk::START;
        if let Ok(n) = follow(&mut state, &wire) {
            prop_assert!(n <= wire.len());
        }
    }

    #[test]
    fn response_heads_agree_with_the_reference(
        status in 200u16..600,
        headers in prop::collection::vec((token(), "[!-~]([ -~]{0,30}[!-~])?"), 0..10),
        length in prop::option::of(0u64..1_000_000),
        chunked in any::<bool>(),
        cut in any::<usize>(),
    ) {
        let mut head = format!("HTTP/1.1 {status} Whatever\r\n");
        let headers: Vec<(String, String)> =
            headers.into_iter().map(|(n, v)| (format!("x-{n}"), v)).collect();
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        match (chunked, length) {
            (true, _) => head.push_str("Transfer-Encoding: chunked\r\n"),
            (false, Some(n)) => head.push_str(&format!("Content-Length: {n}\r\n")),
            (false, None) => {}
        }
        head.push_str("\r\n");
        let wire = head.as_bytes();

        // Any proper prefix is incomplete, never an error or a head.
        let cut = cut % wire.len();
        let mut partial = BytesMut::from(&wire[..cut]);
        prop_assert!(matches!(parse_response_head(&mut partial, &Method::GET), Ok(None)));

        let mut buf = BytesMut::from(wire);
        buf.extend_from_slice(b"body");
        let parsed = parse_response_head(&mut buf, &Method::GET)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .ok_or_else(|| TestCaseError::fail("complete head not parsed"))?;
        prop_assert_eq!(&buf[..], b"body");
        prop_assert_eq!(parsed.status, StatusCode::from_u16(status).unwrap());
        let no_body = status == 204 || status == 304;
        let expected = match (no_body, chunked, length) {
            (true, _, _) => Framing::None,
            (false, true, _) => Framing::Chunked,
            (false, false, Some(n)) => Framing::Length(n),
            (false, false, None) => Framing::UntilClose,
        };
        prop_assert_eq!(parsed.framing, expected);
        for (name, value) in &headers {
            let got: Vec<&[u8]> = parsed.headers.get_all(name.as_str()).iter().map(|v| v.as_bytes()).collect();
            prop_assert!(got.contains(&value.as_bytes()), "{} missing: {:?}", name, parsed.headers);
        }
    }

    #[test]
    fn head_parsers_never_panic_on_any_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"HTTP/1.1 200 OK\r\n"[..]), Just(&b"GET / HTTP/1.1\r\n"[..]), Just(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: "[..])],
        method in prop_oneof![Just(Method::GET), Just(Method::HEAD), Just(Method::CONNECT)],
    ) {
        let mut wire = prefix.to_vec();
        wire.extend_from_slice(&bytes);
        let mut buf = BytesMut::from(&wire[..]);
        let before = buf.len();
        if let Ok(Some(_)) = parse_response_head(&mut buf, &method) {
            prop_assert!(buf.len() < before);
        }
        let _ = request_head(&wire);
    }
}
