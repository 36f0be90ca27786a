//! The access line, written straight into the log writer's buffer.
//!
//! One line per request is the log's hot path: through `tracing`'s
//! formatter it took a field visitor per field, a `fmt::Write` adaptor that
//! re-checks every piece as UTF-8, and a timestamp formatted from scratch.
//! Here the line is written by hand, in exactly the shape `tracing`'s JSON
//! or text formatter gives (so readers of the log see no difference), with
//! the timestamp's date and second formatted once a second per thread.
//!
//! Used once the process's log format is set ([`set_format`], by `main`);
//! until then (tests in process, the library) the line goes through
//! `tracing` as before. Either way `CLAIMGATE_LOG` decides whether it is
//! written (`claimgate::access` at INFO).

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const UNSET: u8 = 0;
const TEXT: u8 = 1;
const JSON: u8 = 2;

static FORMAT: AtomicU8 = AtomicU8::new(UNSET);

/// Writes access lines directly, in this format, from now on.
pub fn set_format(json: bool) {
    FORMAT.store(if json { JSON } else { TEXT }, Ordering::Relaxed);
}

/// One field's value.
pub enum Field<'a> {
    Str(&'a str),
    U64(u64),
}

/// A field's name as each format writes it before the value, made at
/// compile time by [`name!`]: `,"route":` and ` route=`.
/// One copy per field instead of four pieces.
pub struct Name {
    pub json: &'static str,
    pub text: &'static str,
}

/// The [`Name`] of an access-line field.
macro_rules! name {
    ($n:literal) => {
        $crate::access_log::Name {
            json: concat!(",\"", $n, "\":"),
            text: concat!(" ", $n, "="),
        }
    };
}
pub(crate) use name;

/// Whether [`write`] is to be used: a format is set and the filter lets
/// `claimgate::access` lines through.
pub fn direct() -> bool {
    FORMAT.load(Ordering::Relaxed) != UNSET
        && tracing::enabled!(target: "claimgate::access", tracing::Level::INFO)
}

/// Writes one access line of `fields` (a `None` is left out, as `tracing`
/// leaves out an absent `Option`).
pub fn write(fields: &[(Name, Option<Field<'_>>)]) {
    let json = FORMAT.load(Ordering::Relaxed) == JSON;
    crate::logging::with_line(|out| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if json {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(out, now);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{");
            let mut first = true;
            for (name, value) in fields {
                let Some(value) = value else { continue };
                // The first field has no comma before it.
                out.extend_from_slice(&name.json.as_bytes()[usize::from(first)..]);
                first = false;
                match value {
                    Field::Str(s) => json_str(out, s),
                    Field::U64(n) => push_u64(out, *n),
                }
            }
            out.extend_from_slice(b"},\"target\":\"claimgate::access\"}\n");
        } else {
            timestamp(out, now);
            out.extend_from_slice(b"  INFO claimgate::access:");
            for (name, value) in fields {
                let Some(value) = value else { continue };
                out.extend_from_slice(name.text.as_bytes());
                match value {
                    Field::Str(s) => debug_str(out, s),
                    Field::U64(n) => push_u64(out, *n),
                }
            }
            out.push(b'\n');
        }
    });
}

/// `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    // A fold, not `all`: with no early exit the test runs 16-32 bytes at a
    // time, and almost every field needs no escape.
    if s.bytes()
        .fold(true, |ok, b| ok & (b >= 0x20 && b != b'"' && b != b'\\'))
    {
        out.extend_from_slice(s.as_bytes());
    } else {
        for c in s.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// `s` as `{:?}` writes it: quoted, escaped.
fn debug_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().fold(true, |ok, b| {
        ok & ((0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    }) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

thread_local! {
    /// The last second formatted on this thread, and its text.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 in UTC with microseconds, as `tracing`'s formatter writes it:
/// `2026-11-30T11:04:15.176395Z`.
fn timestamp(out: &mut Vec<u8>, since_epoch: std::time::Duration) {
    let secs = since_epoch.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let mut text = [0u8; 19];
            let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            let _ = write!(
                &mut text[..],
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
            *cached = (secs, text);
        }
        out.extend_from_slice(&cached.1);
    });
    let micros = since_epoch.subsec_micros();
    out.push(b'.');
    for shift in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(b'0' + (micros / shift % 10) as u8);
    }
    out.push(b'Z');
}

/// `n` in decimal, without the formatting machinery.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps_match_rfc3339() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_787), (2026, 11, 30));
        let mut out = Vec::new();
        timestamp(
            &mut out,
            std::time::Duration::from_micros(1_796_037_855_176_395),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-30T11:24:15.176395Z"
        );
    }

    #[test]
    fn field_names_are_written_as_each_format_writes_them() {
        let n = name!("route");
        assert_eq!((n.json, n.text), (",\"route\":", " route="));
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [0, 7, 10, 99, 100, 65_535, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        let mut out = Vec::new();
        timestamp(
            &mut out,
            std::time::Duration::from_micros(1_796_037_855_000_042),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-30T11:24:15.000042Z"
        );
    }

    #[test]
    fn strings_are_escaped_as_json_and_as_debug() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(
            serde_json::from_slice::<String>(&out).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
        let mut out = Vec::new();
        debug_str(&mut out, "x\"y");
        assert_eq!(String::from_utf8(out).unwrap(), format!("{:?}", "x\"y"));
        let mut out = Vec::new();
        debug_str(&mut out, "/orders/7");
        assert_eq!(String::from_utf8(out).unwrap(), "\"/orders/7\"");
    }
}
