//! Scans a node's serial console for signs that the kernel or the agent
//! broke: a kernel panic, `BUG:`, `WARNING: CPU:`, `Oops:`, a `Call
//! Trace:`, and a Rust panic (`panicked at`).
//!
//! Kernel markers count only where the kernel puts them: at the start of
//! a console line, or right after its `[    1.234567] ` time stamp (a
//! kernel message may land in the middle of a line the agent was
//! writing). So the kernel's own command line echoed on the console, or
//! a sysctl name, never counts; nor does the bare word `panic`, which
//! both contain (`panic=-1`, `kernel.panic_on_oops`).

use serde::{Deserialize, Serialize};

/// Kernel messages that mean the kernel is broken.
pub const KERNEL_MARKERS: [&str; 5] = [
    "Kernel panic - not syncing",
    "BUG:",
    "WARNING: CPU:",
    "Oops:",
    "Call Trace:",
];
/// A Rust panic message (`thread 'main' panicked at src/…`): the agent's.
pub const AGENT_PANIC: &str = "panicked at";

/// One console line that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleHit {
    /// The marker it matched.
    pub marker: String,
    /// The whole line, as the console had it.
    pub line: String,
}

/// The first marker `line` carries, if any.
pub fn scan_line(line: &str) -> Option<ConsoleHit> {
    let hit = |marker: &str| {
        Some(ConsoleHit {
            marker: marker.to_string(),
            line: line.to_string(),
        })
    };
    if line.contains(AGENT_PANIC) {
        return hit(AGENT_PANIC);
    }
    for marker in KERNEL_MARKERS {
        let mut from = 0;
        while let Some(at) = line[from..].find(marker) {
            let before = &line[..from + at];
            if at_message_start(before) {
                return hit(marker);
            }
            from += at + marker.len();
        }
    }
    None
}

/// Whether text ending in `before` puts what follows at the start of a
/// kernel message: nothing but blanks before it, or a time stamp.
fn at_message_start(before: &str) -> bool {
    let b = before.trim_end();
    if b.is_empty() {
        return true;
    }
    // `[    1.234567]`: digits, blanks and one dot inside the brackets
    let Some(open) = b
        .strip_suffix(']')
        .and_then(|s| s.rfind('[').map(|i| &s[i + 1..]))
    else {
        return false;
    };
    !open.trim().is_empty() && open.trim().bytes().all(|c| c.is_ascii_digit() || c == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_agent_failures_are_found() {
        for (line, marker) in [
            (
                "[    3.141592] Kernel panic - not syncing: VFS: Unable to mount root fs",
                "Kernel panic - not syncing",
            ),
            (
                "[   12.000001] BUG: kernel NULL pointer dereference, address: 0000000000000000",
                "BUG:",
            ),
            (
                "[    0.5] WARNING: CPU: 0 PID: 1 at kernel/fork.c:1 x+0x1/0x2",
                "WARNING: CPU:",
            ),
            ("Oops: 0002 [#1] PREEMPT SMP NOPTI", "Oops:"),
            ("[ 7.7] Call Trace:", "Call Trace:"),
            (
                "thread 'main' panicked at agent/src/main.rs:10:5:",
                "panicked at",
            ),
            // a kernel message that lands inside a line the agent was writing
            (
                "nodeagent: starting contai[    9.000000] BUG: scheduling while atomic",
                "BUG:",
            ),
        ] {
            let hit = scan_line(line).unwrap_or_else(|| panic!("missed: {line}"));
            assert_eq!(hit.marker, marker, "{line}");
            assert_eq!(hit.line, line);
        }
    }

    #[test]
    fn the_command_line_and_sysctl_names_are_not_failures() {
        for line in [
            "[    0.000000] Command line: console=ttyS0 panic=-1 oops=panic nodeimg.root=/dev/vda",
            "[    0.000000] Kernel command line: console=ttyS0 panic=-1 BUG: Oops: x",
            "nodeagent: sysctl kernel.panic_on_oops=1 kernel.panic=-1 read back",
            "nodeagent: kernel.warn_limit=1 (a WARNING: CPU: would stop the node)",
            "panic",
            "",
            "[abc] BUG: not a time stamp",
        ] {
            assert_eq!(scan_line(line), None, "{line}");
        }
    }
}
