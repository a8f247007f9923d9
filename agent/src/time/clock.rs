//! The kernel's clock: read it, correct it, and tell the kernel it is
//! synchronised. Only the time thread (and its boot-time first run) call
//! the correcting functions.
//!
//! Step or slew: an offset above [`STEP_THRESHOLD`] (0.5 s, as ntpd and
//! chrony's `makestep` default to at boot) is stepped with
//! `clock_settime(CLOCK_REALTIME)`; a smaller one is slewed with
//! `adjtimex(ADJ_OFFSET_SINGLESHOT)` (the kernel skews the clock by 0.5 ms
//! per second until the offset is gone), so time never jumps backwards
//! by a little under running services. A step makes the kernel forget it
//! was synchronised (it sets `STA_UNSYNC`), so marking comes after it.

use std::time::{SystemTime, UNIX_EPOCH};

use contract::ntp::{Sample, Timestamp};

/// Offsets larger than this are stepped; smaller ones slewed.
pub const STEP_THRESHOLD_NS: i64 = 500_000_000;

/// How an offset was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Step,
    Slew,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Step => "step",
            Method::Slew => "slew",
        }
    }
}

/// Step above the threshold, slew at or below it.
pub fn method_for(offset_ns: i64) -> Method {
    if offset_ns.unsigned_abs() > STEP_THRESHOLD_NS.unsigned_abs() {
        Method::Step
    } else {
        Method::Slew
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("clock_settime(CLOCK_REALTIME)")]
    Step(#[source] std::io::Error),
    #[error("adjtimex({what})")]
    Adjtimex {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel still reports its clock unsynchronised after adjtimex")]
    StillUnsynchronised,
}

/// The clock now, as nanoseconds since the Unix epoch (negative before).
pub fn now_unix_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The clock now, as an NTP timestamp.
pub fn now() -> Timestamp {
    let ns = now_unix_ns();
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    Timestamp::from_unix(secs as i64, nanos as u32)
}

/// Applies `offset_ns` (server minus us) to CLOCK_REALTIME.
pub fn apply(offset_ns: i64) -> Result<Method, ClockError> {
    let method = method_for(offset_ns);
    match method {
        Method::Step => {
            let target = now_unix_ns() + i128::from(offset_ns);
            let ts = rustix::time::Timespec {
                tv_sec: target.div_euclid(1_000_000_000) as i64,
                tv_nsec: target.rem_euclid(1_000_000_000) as _,
            };
            rustix::time::clock_settime(rustix::time::ClockId::Realtime, ts)
                .map_err(|e| ClockError::Step(e.into()))?;
        }
        Method::Slew => {
            let mut tx = zeroed_timex();
            tx.modes = libc::ADJ_OFFSET_SINGLESHOT;
            tx.offset = (offset_ns / 1000) as libc::c_long; // microseconds
            adjtimex(&mut tx, "ADJ_OFFSET_SINGLESHOT")?;
        }
    }
    Ok(method)
}

/// Tells the kernel the clock is synchronised (clears `STA_UNSYNC`) with
/// the sample's error bounds, so its own bookkeeping (and what
/// `adjtimex`/`timedatectl` readers see) agrees. The kernel lets
/// `maxerror` grow by 500 µs per second and marks the clock unsynchronised
/// again at 16 s, about 9 hours after the last sync: the time thread
/// syncs far more often.
pub fn mark_synchronised(sample: &Sample) -> Result<(), ClockError> {
    let mut read = zeroed_timex();
    adjtimex(&mut read, "read")?;
    let mut tx = zeroed_timex();
    tx.modes = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
    tx.status = read.status & !libc::STA_UNSYNC;
    tx.maxerror = (sample.max_error_ns() / 1000).max(1) as libc::c_long;
    tx.esterror = (sample.delay_ns / 2000).max(1) as libc::c_long;
    let state = adjtimex(&mut tx, "ADJ_STATUS")?;
    if state == libc::TIME_ERROR {
        return Err(ClockError::StillUnsynchronised);
    }
    Ok(())
}

fn zeroed_timex() -> libc::timex {
    // SAFETY: timex is a plain C struct of integers (and padding), for
    // which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// adjtimex(2); returns the clock state (TIME_OK, …, TIME_ERROR).
fn adjtimex(tx: &mut libc::timex, what: &'static str) -> Result<libc::c_int, ClockError> {
    // SAFETY: `tx` is a live, exclusively borrowed timex for the call,
    // which reads and writes only that struct.
    let rc = unsafe { libc::adjtimex(tx) };
    if rc < 0 {
        return Err(ClockError::Adjtimex {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_offsets_step_small_ones_slew() {
        assert_eq!(method_for(788_918_400_000_000_000), Method::Step);
        assert_eq!(method_for(-600_000_000), Method::Step);
        assert_eq!(method_for(500_000_000), Method::Slew);
        assert_eq!(method_for(-499_999_999), Method::Slew);
        assert_eq!(method_for(i64::MIN), Method::Step);
    }

    #[test]
    fn now_is_an_ntp_timestamp_of_the_unix_clock() {
        let (secs, _) = now().to_unix();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((secs - unix).abs() <= 1, "{secs} {unix}");
    }
}
