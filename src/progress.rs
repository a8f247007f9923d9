//! Progress for long steps: a bar on a terminal, nothing otherwise (logs
//! carry the milestones), and nothing at all with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Bars only when stderr is a terminal, not quiet, and not in CI.
    pub fn detect(quiet: bool) -> Self {
        let ci = std::env::var_os("CI").is_some();
        Progress {
            enabled: !quiet && !ci && std::io::stderr().is_terminal(),
        }
    }

    pub fn bar(&self, len: u64, msg: &'static str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {wide_msg}")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(msg);
        pb
    }
}
