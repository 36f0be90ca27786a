//! Durations written the way operators write them: `250ms`, `5s`, `2m`,
//! `1h`, `1m30s`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`, or several
/// such parts from the largest unit down: `1m30s`, `1h30m`, `2s500ms`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("duration is empty: write e.g. 250ms, 5s, 2m, 1h or 1m30s".into());
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_unit = u64::MAX;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "duration `{text}` must be whole numbers with units, e.g. 250ms, 5s, 1m30s"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration `{text}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(format!("duration `{text}` needs a unit (ms, s, m, h)")),
            _ => {
                return Err(format!(
                    "duration `{text}`: unknown unit `{unit}` (ms, s, m, h; e.g. 1m30s)"
                ))
            }
        };
        if scale >= last_unit {
            return Err(format!(
                "duration `{text}`: write the parts from the largest unit down, each once (e.g. 1h30m)"
            ));
        }
        last_unit = scale;
        total = n
            .checked_mul(scale)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration `{text}` is too large"))?;
    }
    Ok(Duration::from_millis(total))
}

/// serde adapter for `Option<Duration>` fields.
pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_refuses_the_rest() {
        let cases = [
            ("250ms", Ok(Duration::from_millis(250))),
            ("5s", Ok(Duration::from_secs(5))),
            ("2m", Ok(Duration::from_secs(120))),
            ("1h", Ok(Duration::from_secs(3600))),
            ("1m30s", Ok(Duration::from_secs(90))),
            ("1h30m", Ok(Duration::from_secs(5400))),
            ("2s500ms", Ok(Duration::from_millis(2500))),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), want, "{text}");
        }
        for bad in ["5", "s", "5x", "-1s", "1.5s", "", "30s1m", "1s1s", "1m30"] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
