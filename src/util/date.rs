//! Parses the archive's `Date:` (RFC 2822, always UTC in Debian's Release
//! files) into Unix seconds, so a build's timestamps come from its lock
//! when SOURCE_DATE_EPOCH is not set. Hand-written: one format, ~30 lines,
//! not worth a date crate.

/// `Sat, 21 Nov 2026 09:15:44 UTC` -> seconds since the epoch.
pub fn parse_release_date(s: &str) -> Option<u64> {
    let s = s.split_once(',').map(|(_, rest)| rest).unwrap_or(s).trim();
    let mut w = s.split_whitespace();
    let day: u32 = w.next()?.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| Some(*m) == w.clone().next())? as u32
        + 1;
    w.next();
    let year: i64 = w.next()?.parse().ok()?;
    let mut hms = w.next()?.split(':').map(|x| x.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    match w.next() {
        None | Some("UTC") | Some("GMT") | Some("+0000") => {}
        _ => return None,
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days as u64 * 86400 + h * 3600 + m * 60 + sec)
}

/// Howard Hinnant's days-from-civil algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_dates() {
        assert_eq!(parse_release_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        // date -d '2026-11-21 09:15:44 UTC' +%s
        assert_eq!(
            parse_release_date("Sat, 21 Nov 2026 09:15:44 UTC"),
            Some(1_795_252_544)
        );
        assert_eq!(
            parse_release_date("Sat, 29 Feb 2020 12:00:00 UTC"),
            Some(1_582_977_600)
        );
        assert_eq!(parse_release_date("Sat, 21 Nov 2026 09:15:44 +0200"), None);
        assert_eq!(parse_release_date("garbage"), None);
    }
}
