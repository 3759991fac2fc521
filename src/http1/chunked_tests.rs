use super::*;

/// Decodes `raw` fed in pieces of `step` bytes; returns the body and trailers, or why not.
fn dechunk(raw: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), &'static str> {
    let mut state = Chunk::START;
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut pieces = raw.chunks(step);
    loop {
        match decode(&mut buf, &mut state).map_err(|Malformed| "malformed")? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::Trailers(trailers) => return Ok((body, Some(trailers))),
            Decoded::End => {
                assert!(buf.is_empty() || pieces.next().is_none());
                return Ok((body, None));
            }
            Decoded::NeedMore => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return Err("truncated"),
            },
        }
    }
}

/// Follows `raw` in pieces of `step` bytes; returns the bytes after the body, if it ended.
fn followed(raw: &[u8], step: usize) -> Result<Option<Vec<u8>>, Malformed> {
    let mut state = Chunk::START;
    let mut rest = Vec::new();
    for piece in raw.chunks(step) {
        if state == Chunk::End {
            rest.extend_from_slice(piece);
            continue;
        }
        let used = follow(&mut state, piece)?;
        rest.extend_from_slice(&piece[used..]);
    }
    Ok((state == Chunk::End).then_some(rest))
}

#[test]
fn chunked_bodies_decode_whatever_the_read_sizes() {
    let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
    for step in [1, 2, 3, 5, 8, raw.len()] {
        let (body, trailers) = dechunk(raw, step).unwrap();
        assert_eq!(body, b"hello, world", "step {step}");
        assert!(trailers.is_none());
    }
    let raw = b"A\r\n0123456789\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
    for step in [1, 4, raw.len()] {
        let (body, trailers) = dechunk(raw, step).unwrap();
        assert_eq!(body, b"0123456789");
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-checksum"], "abc");
        assert_eq!(trailers["x-other"], "1");
    }
}

#[test]
fn many_small_chunks_in_one_buffer() {
    let mut raw = Vec::new();
    for _ in 0..10_000 {
        raw.extend_from_slice(b"1\r\nx\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (body, _) = dechunk(&raw, raw.len()).unwrap();
    assert_eq!(body.len(), 10_000);
}

#[test]
fn malformed_chunked_bodies_are_errors() {
    for raw in [
        &b"zz\r\n"[..],
        b"5\r\nhelloX\r\n",
        b"\r\n",
        b"ffffffffffffffffff\r\n",
    ] {
        assert!(
            matches!(dechunk(raw, raw.len()), Err("malformed")),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert!(matches!(dechunk(b"5\r\nhel", 3), Err("truncated")));
}

#[test]
fn sizes_take_at_most_sixteen_hex_digits_on_both_sides() {
    let max = b"ffffffffffffffff\r\n";
    assert_eq!(followed(max, max.len()), Ok(None), "16 digits: a u64 chunk");
    assert!(matches!(dechunk(max, max.len()), Err("truncated")));
    let over = b"10000000000000000\r\n";
    assert_eq!(followed(over, over.len()), Err(Malformed));
    assert!(matches!(dechunk(over, over.len()), Err("malformed")));
    // Leading zeros are not significant: hyper takes any number of them, so must we.
    let zeros = b"00000000000000000005\r\nhello\r\n0\r\n\r\n";
    assert_eq!(followed(zeros, zeros.len()), Ok(Some(Vec::new())));
    assert_eq!(followed(zeros, 1), Ok(Some(Vec::new())));
}

#[test]
fn following_stops_where_the_body_ends() {
    let raw = b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n";
    for step in [1, 3, raw.len()] {
        let rest = followed(raw, step).unwrap().unwrap();
        assert_eq!(rest, b"GET / HTTP/1.1\r\n", "step {step}");
    }
    assert_eq!(followed(b"5\r\nhelloX", 9), Err(Malformed));
}
