//! Tests of the framing guard, fed in reads of every size.

use super::*;

/// Feeds `input` in reads of `step` bytes; returns what hyper would have received.
fn run(input: &[u8], step: usize) -> (Vec<u8>, State) {
    let mut guard = FramingGuard::new((), 64 * 1024, Vec::new());
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        let mut piece = piece.to_vec();
        let pass = guard.inspect(&mut piece);
        out.extend_from_slice(&piece[..pass]);
    }
    (out, guard.state)
}

const SMUGGLE: &[u8] =
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

/// `clean` passes untouched and the smuggling request after it is poisoned, in reads of
/// each of `steps` bytes and in one read of everything.
fn assert_clean_then_poisoned(clean: &[u8], steps: &[usize]) {
    let input = [clean, SMUGGLE].concat();
    for &step in steps.iter().chain([&input.len()]) {
        let (out, _) = run(&input, step);
        assert_eq!(&out[..clean.len()], clean, "step {step}");
        assert!(out[clean.len()..].contains(&POISON), "step {step}");
    }
}

#[test]
fn a_conflicting_head_is_poisoned_at_its_last_byte() {
    for step in [1, 2, 7, SMUGGLE.len()] {
        let (out, state) = run(SMUGGLE, step);
        let head_end = SMUGGLE.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(out[head_end - 1], POISON, "step {step}");
        assert_eq!(&out[..head_end - 1], &SMUGGLE[..head_end - 1]);
        assert_eq!(state, State::Broken);
    }
}

#[test]
fn a_conflict_after_keep_alive_requests_is_found() {
    let mut input = Vec::new();
    input.extend_from_slice(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    input.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    input.extend_from_slice(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n");
    assert_clean_then_poisoned(&input, &[1, 3, 16]);
}

#[test]
fn bodies_that_look_like_heads_are_not_parsed_as_heads() {
    let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut input = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    input.extend_from_slice(body);
    let mut chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    chunked.extend_from_slice(body);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    for input in [input, chunked] {
        for step in [1, 5, input.len()] {
            let (out, state) = run(&input, step);
            assert_eq!(out, input, "step {step}");
            assert_eq!(state, State::Head);
        }
    }
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";

/// The guard after reading an upgrade request followed by `after`: what hyper got now.
fn asked_to_switch(after: &[u8]) -> (FramingGuard<()>, usize) {
    let mut guard = FramingGuard::new((), 64 * 1024, Vec::new());
    let mut input = UPGRADE.to_vec();
    input.extend_from_slice(after);
    let pass = guard.inspect(&mut input);
    (guard, pass)
}

#[test]
fn what_follows_an_upgrade_request_waits_for_its_answer() {
    let (mut guard, pass) = asked_to_switch(b"\x81\x05hello");
    assert_eq!(pass, UPGRADE.len());
    assert!(guard.awaiting_answer());
    guard.written(
        &[io::IoSlice::new(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        )],
        36,
    );
    assert_eq!(guard.state, State::Off);
    assert!(!guard.awaiting_answer());
}

#[test]
fn an_upgrade_that_was_refused_keeps_the_watch() {
    let (mut guard, pass) = asked_to_switch(SMUGGLE);
    assert_eq!(pass, UPGRADE.len());
    // `100 Continue` is not the answer; the status may come in pieces.
    guard.written(&[io::IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")], 25);
    assert!(guard.awaiting_answer());
    guard.written(
        &[
            io::IoSlice::new(b"HTTP/1.1 4"),
            io::IoSlice::new(b"04 Not Found\r\n"),
        ],
        13,
    );
    assert!(!guard.awaiting_answer());
    assert_eq!(guard.state, State::Head);
    let mut next = SMUGGLE.to_vec();
    guard.inspect(&mut next);
    assert!(next.contains(&POISON));
}

#[test]
fn chunk_sizes_with_many_leading_zeros_keep_the_watch() {
    let leading_zeros =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n";
    assert_clean_then_poisoned(leading_zeros, &[1, 7]);
}

#[test]
fn broken_chunked_framing_stops_the_connection() {
    let mut input =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n"
            .to_vec();
    input.extend_from_slice(SMUGGLE);
    let (out, state) = run(&input, input.len());
    assert_eq!(state, State::Broken);
    let body_start = input.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        out.len(),
        body_start,
        "nothing after the broken chunk reaches hyper"
    );
}

#[test]
fn invalid_heads_are_poisoned_and_stop_the_connection() {
    let input = b"GET / HTTP/1.1\r\nBad Header\r\n\r\n";
    let (out, state) = run(input, input.len());
    assert_eq!(out[0], POISON_ANY);
    assert_eq!(&out[1..], &input[1..]);
    assert_eq!(state, State::Broken);
}

#[test]
fn oversized_heads_stop_the_connection() {
    let mut guard = FramingGuard::new((), 100, Vec::new());
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 200));
    guard.inspect(&mut head);
    assert_eq!(guard.state, State::Broken);
    assert!(guard.partial_head.is_empty());
}
