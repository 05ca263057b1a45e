//! The on-disk record frame.
//!
//! Every record is one self-checking frame:
//!
//! ```text
//! +---------+----------+-----------+------------------------------------------+
//! | len u32 | crc  u32 | hcrc u32  | body (len bytes)                          |
//! +---------+----------+-----------+------------------------------------------+
//! body = version u8 (1) | offset i64 | timestamp i64
//!      | key_len i32 (-1: no key)     | key bytes
//!      | value_len i32 (-1: tombstone) | value bytes
//!      | header_count u32 | { name_len u32 | name | value_len u32 | value }*
//! ```
//!
//! All integers are little endian. `crc` is the CRC32C of the body; `hcrc` is the CRC32C of
//! the first eight bytes (`len` and `crc`), so a damaged length field is told apart from a
//! record that was only partly written when the process or the machine died.

use bytes::Bytes;
use imbus_log::{Header, Offset, Record, TimestampMs};

/// Bytes before the body: length, body CRC, header CRC.
pub(crate) const FRAME_HEADER: usize = 12;
/// The smallest possible body (no key, no value, no headers).
pub(crate) const MIN_BODY: usize = 1 + 8 + 8 + 4 + 4 + 4;
/// A sanity bound for a body length read from disk (larger is treated as damage).
pub(crate) const MAX_BODY: usize = 1 << 30;
const VERSION: u8 = 1;

/// A record as stored: its offset and time are fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub offset: Offset,
    pub timestamp: TimestampMs,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// The payload size of a record (key, value and headers), the figure compared against
/// the configured record size limit.
pub(crate) fn payload_len(record: &Record) -> usize {
    record.key.as_ref().map_or(0, Bytes::len)
        + record.value.as_ref().map_or(0, Bytes::len)
        + record
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

/// The full frame size of a record.
pub(crate) fn frame_len(key: Option<&Bytes>, value: Option<&Bytes>, headers: &[Header]) -> usize {
    FRAME_HEADER + body_len(key, value, headers)
}

fn body_len(key: Option<&Bytes>, value: Option<&Bytes>, headers: &[Header]) -> usize {
    MIN_BODY
        + key.map_or(0, Bytes::len)
        + value.map_or(0, Bytes::len)
        + headers
            .iter()
            .map(|h| 8 + h.key.len() + h.value.len())
            .sum::<usize>()
}

fn opt_len(b: Option<&Bytes>) -> i32 {
    // Lengths are bounded by the record size limit (at most a few MiB) long before this.
    b.map_or(-1, |b| i32::try_from(b.len()).unwrap_or(i32::MAX))
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Appends the frame of one record to `buf`.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    offset: Offset,
    timestamp: TimestampMs,
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: &[Header],
) {
    let start = buf.len();
    let blen = body_len(key, value, headers);
    buf.reserve(FRAME_HEADER + blen);
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    buf.push(VERSION);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp.to_le_bytes());
    buf.extend_from_slice(&opt_len(key).to_le_bytes());
    if let Some(k) = key {
        buf.extend_from_slice(k);
    }
    buf.extend_from_slice(&opt_len(value).to_le_bytes());
    if let Some(v) = value {
        buf.extend_from_slice(v);
    }
    buf.extend_from_slice(&u32_len(headers.len()).to_le_bytes());
    for h in headers {
        buf.extend_from_slice(&u32_len(h.key.len()).to_le_bytes());
        buf.extend_from_slice(h.key.as_bytes());
        buf.extend_from_slice(&u32_len(h.value.len()).to_le_bytes());
        buf.extend_from_slice(&h.value);
    }
    debug_assert_eq!(buf.len() - start, FRAME_HEADER + blen);
    let crc = crc32c::crc32c(&buf[start + FRAME_HEADER..]);
    buf[start..start + 4].copy_from_slice(&u32_len(blen).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&buf[start..start + 8]);
    buf[start + 8..start + 12].copy_from_slice(&hcrc.to_le_bytes());
}

/// What the bytes at a position hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete, valid frame of `len` bytes.
    Complete { len: usize },
    /// The buffer ends before the frame does; `needed` is the whole frame size when the
    /// header could be read, else `FRAME_HEADER`.
    Incomplete { needed: usize },
    /// The frame header is damaged.
    BadHeader,
    /// The header is valid but the body does not match its CRC or cannot be parsed.
    BadBody(&'static str),
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_le_bytes(a)
}

fn le_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

/// Checks the frame that starts at `buf[0]` (header and body CRC and body structure).
pub(crate) fn check(buf: &[u8]) -> Frame {
    if buf.len() < FRAME_HEADER {
        return Frame::Incomplete {
            needed: FRAME_HEADER,
        };
    }
    let hcrc = le_u32(buf, 8);
    if crc32c::crc32c(&buf[..8]) != hcrc {
        return Frame::BadHeader;
    }
    let blen = le_u32(buf, 0) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&blen) {
        return Frame::BadHeader;
    }
    let len = FRAME_HEADER + blen;
    if buf.len() < len {
        return Frame::Incomplete { needed: len };
    }
    let body = &buf[FRAME_HEADER..len];
    if crc32c::crc32c(body) != le_u32(buf, 4) {
        return Frame::BadBody("checksum mismatch");
    }
    match parse_body(body) {
        Ok(_) => Frame::Complete { len },
        Err(e) => Frame::BadBody(e),
    }
}

/// Offsets of the parts of a body, relative to the body start.
struct BodyLayout {
    offset: Offset,
    timestamp: TimestampMs,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
    headers: Vec<((usize, usize), (usize, usize))>,
}

fn parse_body(body: &[u8]) -> Result<BodyLayout, &'static str> {
    if body.len() < MIN_BODY {
        return Err("body too short");
    }
    if body[0] != VERSION {
        return Err("unknown record version");
    }
    let offset = le_i64(body, 1);
    let timestamp = le_i64(body, 9);
    let mut at = 17usize;
    let take_opt = |at: &mut usize| -> Result<Option<(usize, usize)>, &'static str> {
        if *at + 4 > body.len() {
            return Err("truncated length");
        }
        let n = le_i32(body, *at);
        *at += 4;
        if n < 0 {
            if n != -1 {
                return Err("invalid length");
            }
            return Ok(None);
        }
        let n = n as usize;
        if *at + n > body.len() {
            return Err("length past end of record");
        }
        let r = (*at, *at + n);
        *at += n;
        Ok(Some(r))
    };
    let key = take_opt(&mut at)?;
    let value = take_opt(&mut at)?;
    if at + 4 > body.len() {
        return Err("truncated header count");
    }
    let count = le_u32(body, at) as usize;
    at += 4;
    let mut headers = Vec::new();
    for _ in 0..count {
        let mut part = || -> Result<(usize, usize), &'static str> {
            if at + 4 > body.len() {
                return Err("truncated header");
            }
            let n = le_u32(body, at) as usize;
            at += 4;
            if at + n > body.len() {
                return Err("header past end of record");
            }
            let r = (at, at + n);
            at += n;
            Ok(r)
        };
        let k = part()?;
        let v = part()?;
        if std::str::from_utf8(&body[k.0..k.1]).is_err() {
            return Err("header name is not UTF-8");
        }
        headers.push((k, v));
    }
    if at != body.len() {
        return Err("trailing bytes in record");
    }
    Ok(BodyLayout {
        offset,
        timestamp,
        key,
        value,
        headers,
    })
}

/// The offset and timestamp of a frame already validated by [`check`].
pub(crate) fn meta(frame: &[u8]) -> (Offset, TimestampMs) {
    (
        le_i64(frame, FRAME_HEADER + 1),
        le_i64(frame, FRAME_HEADER + 9),
    )
}

/// Decodes a frame already validated by [`check`]. Key, value and header values are
/// copied, so a record kept by a consumer does not pin the read buffer it came from.
pub(crate) fn decode(frame: &[u8]) -> Result<StoredRecord, &'static str> {
    let body = frame.get(FRAME_HEADER..).ok_or("frame too short")?;
    let l = parse_body(body)?;
    let copy = |(a, b): (usize, usize)| Bytes::copy_from_slice(&body[a..b]);
    let mut headers = Vec::with_capacity(l.headers.len());
    for (k, v) in l.headers {
        let name = std::str::from_utf8(&body[k.0..k.1]).map_err(|_| "header name is not UTF-8")?;
        headers.push(Header {
            key: name.to_owned(),
            value: copy(v),
        });
    }
    Ok(StoredRecord {
        offset: l.offset,
        timestamp: l.timestamp,
        key: l.key.map(copy),
        value: l.value.map(copy),
        headers,
    })
}

/// Decodes only the key of a validated frame (compaction needs nothing else).
pub(crate) fn key_of(frame: &[u8]) -> Option<&[u8]> {
    let body = &frame[FRAME_HEADER..];
    let n = le_i32(body, 17);
    if n < 0 {
        return None;
    }
    body.get(21..21 + n as usize)
}

/// Whether a validated frame is a tombstone.
pub(crate) fn is_tombstone(frame: &[u8]) -> bool {
    let body = &frame[FRAME_HEADER..];
    let klen = le_i32(body, 17).max(0) as usize;
    le_i32(body, 21 + klen) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Option<Bytes>, Option<Bytes>, Vec<Header>)> {
        vec![
            (None, None, vec![]),
            (Some(Bytes::from_static(b"k")), None, vec![]),
            (
                Some(Bytes::from_static(b"key")),
                Some(Bytes::from_static(b"value")),
                vec![
                    Header {
                        key: "h1".into(),
                        value: Bytes::from_static(b"x"),
                    },
                    Header {
                        key: "".into(),
                        value: Bytes::new(),
                    },
                ],
            ),
            (Some(Bytes::new()), Some(Bytes::new()), vec![]),
            (None, Some(Bytes::from(vec![7u8; 5000])), vec![]),
        ]
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        let recs = sample();
        for (i, (k, v, h)) in recs.iter().enumerate() {
            encode(
                &mut buf,
                100 + i as i64,
                -5 + i as i64,
                k.as_ref(),
                v.as_ref(),
                h,
            );
        }
        let bytes = buf;
        let mut pos = 0;
        for (i, (k, v, h)) in recs.iter().enumerate() {
            let Frame::Complete { len } = check(&bytes[pos..]) else {
                panic!("frame {i} invalid");
            };
            assert_eq!(len, frame_len(k.as_ref(), v.as_ref(), h));
            let r = decode(&bytes[pos..pos + len]).unwrap();
            assert_eq!(r.offset, 100 + i as i64);
            assert_eq!(r.timestamp, -5 + i as i64);
            assert_eq!(&r.key, k);
            assert_eq!(&r.value, v);
            assert_eq!(&r.headers, h);
            assert_eq!(meta(&bytes[pos..]), (100 + i as i64, -5 + i as i64));
            assert_eq!(key_of(&bytes[pos..pos + len]), k.as_deref());
            assert_eq!(is_tombstone(&bytes[pos..pos + len]), v.is_none());
            pos += len;
        }
        assert_eq!(pos, bytes.len());
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            1,
            2,
            Some(&Bytes::from_static(b"key")),
            Some(&Bytes::from_static(b"value")),
            &[],
        );
        for cut in 0..buf.len() {
            assert!(
                matches!(check(&buf[..cut]), Frame::Incomplete { .. }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            1,
            2,
            Some(&Bytes::from_static(b"key")),
            Some(&Bytes::from_static(b"value")),
            &[],
        );
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                let r = check(&damaged);
                assert!(
                    matches!(
                        r,
                        Frame::BadHeader | Frame::BadBody(_) | Frame::Incomplete { .. }
                    ),
                    "flip {byte}:{bit} gave {r:?}"
                );
                // A damaged length may only look incomplete if the header CRC still
                // matched, which a single bit flip cannot achieve.
                assert!(!matches!(r, Frame::Incomplete { .. }), "flip {byte}:{bit}");
            }
        }
    }

    #[test]
    fn zeros_are_a_bad_header() {
        assert_eq!(check(&[0u8; 64]), Frame::BadHeader);
    }
}
