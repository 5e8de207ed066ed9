//! Progress of long work (the guest kernel's build, apt downloads, the
//! bench, the fuzz) on stderr: on a terminal one live line, redrawn at most
//! ten times a second; otherwise (CI logs) a plain line every 30 seconds.
//! Never on stdout, and never in what a scenario's checks read (the QEMU
//! console).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a live line is redrawn, and a plain line printed.
const LIVE_EVERY: Duration = Duration::from_millis(100);
const PLAIN_EVERY: Duration = Duration::from_secs(30);
/// A live line longer than this is cut (the terminal's width is not asked).
const LIVE_WIDTH: usize = 110;

/// How much there is to do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Total {
    Unknown,
    /// Exactly this much.
    Exact(u64),
    /// About this much (from an earlier run): shown as `~N`; what is done
    /// may go past it.
    About(u64),
}

/// What is counted, and the divisor shown (bytes as MB).
#[derive(Clone, Copy, Debug)]
pub struct Unit {
    pub name: &'static str,
    pub scale: u64,
}

pub const STEPS: Unit = Unit { name: "steps", scale: 1 };
pub const ROWS: Unit = Unit { name: "rows", scale: 1 };
pub const CALLS: Unit = Unit { name: "calls", scale: 1 };
pub const MB: Unit = Unit { name: "MB", scale: 1_000_000 };

/// `1m05s`, `42s`, `1h02m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The progress line: `WHAT: DONE of TOTAL UNIT (P %), RATE UNIT/s, ELAPSED, ~LEFT left: NOTE`;
/// the rate and the time left from `pace`: (a time, what was done in it).
pub fn line(
    what: &str,
    done: u64,
    total: Total,
    unit: Unit,
    elapsed: Duration,
    pace: Option<(Duration, u64)>,
    note: &str,
) -> String {
    let n = |v: u64| {
        if unit.scale == 1 {
            v.to_string()
        } else {
            format!("{:.1}", v as f64 / unit.scale as f64)
        }
    };
    let mut s = format!("{what}: {}", n(done));
    let of = match total {
        Total::Exact(t) => Some((t, "")),
        Total::About(t) => Some((t, "~")),
        Total::Unknown => None,
    };
    if let Some((t, about)) = of {
        s += &format!(" of {about}{} {}", n(t), unit.name);
        if let Some(pct) = (done.min(t) * 100).checked_div(t) {
            s += &format!(" ({pct} %)");
        }
    } else {
        s += &format!(" {}", unit.name);
    }
    // Per second, over the pace's time.
    let rate = pace.filter(|(t, n)| t.as_secs_f64() >= 1.0 && *n > 0).map(|(t, n)| n as f64 / t.as_secs_f64());
    if let Some(r) = rate {
        s += &format!(", {:.1} {}/s", r / unit.scale as f64, unit.name);
    }
    s += &format!(", {}", duration(elapsed));
    if let (Some(r), Some((t, _))) = (rate, of.filter(|&(t, _)| t > done)) {
        s += &format!(", ~{} left", duration(Duration::from_secs_f64((t - done) as f64 / r)));
    }
    if !note.is_empty() {
        s += &format!(": {note}");
    }
    s
}

/// One piece of long work being followed.
pub struct Progress {
    what: String,
    total: Total,
    unit: Unit,
    start: Instant,
    live: bool,
    /// When the line was last shown (None: not yet).
    shown: Option<Instant>,
    /// The first update: when, and what was done then (the rate counts
    /// from there, not from set-up such as a build before a run).
    first: Option<(Instant, u64)>,
    done: u64,
    /// Where lines go: stderr, or a buffer (tests).
    buffer: Option<Vec<u8>>,
}

impl Progress {
    /// Follows `what` on stderr, live when stderr is a terminal.
    pub fn new(what: &str, total: Total, unit: Unit) -> Progress {
        Progress::with(what, total, unit, std::io::stderr().is_terminal())
    }

    fn with(what: &str, total: Total, unit: Unit, live: bool) -> Progress {
        Progress {
            what: what.into(),
            total,
            unit,
            start: Instant::now(),
            live,
            shown: None,
            first: None,
            done: 0,
            buffer: None,
        }
    }

    pub fn set_total(&mut self, total: Total) {
        self.total = total;
    }

    /// `done` so far, and what is being done now; shown when it is time.
    pub fn set(&mut self, done: u64, note: &str) {
        self.done = done;
        let (since, at_first) = *self.first.get_or_insert((Instant::now(), done));
        let every = if self.live { LIVE_EVERY } else { PLAIN_EVERY };
        if self.shown.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        // The first plain line only after a while: short work prints none.
        if !self.live && self.shown.is_none() && self.start.elapsed() < PLAIN_EVERY {
            return;
        }
        self.shown = Some(Instant::now());
        let pace = (since.elapsed(), done.saturating_sub(at_first));
        let l = line(&self.what, done, self.total, self.unit, self.start.elapsed(), Some(pace), note);
        if self.live {
            let cut: String = l.chars().take(LIVE_WIDTH).collect();
            self.write(&format!("\r{cut}\x1b[K"));
        } else {
            self.write(&format!("xtask: {l}\n"));
        }
    }

    fn write(&mut self, s: &str) {
        match &mut self.buffer {
            Some(b) => b.extend_from_slice(s.as_bytes()),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(s.as_bytes());
                let _ = err.flush();
            }
        }
    }

    /// Clears the live line; prints `end` (if any) as a plain line.
    pub fn finish(&mut self, end: &str) {
        if self.live && self.shown.is_some() {
            self.write("\r\x1b[K");
        }
        if !end.is_empty() {
            let took = duration(self.start.elapsed());
            self.write(&format!("xtask: {end} ({took})\n"));
        }
        self.shown = None;
    }

    pub fn done(&self) -> u64 {
        self.done
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error or a panic must not leave a half line on the terminal.
        if self.live && self.shown.is_some() {
            self.write("\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let s = Duration::from_secs;
        assert_eq!(
            line("kernel", 500, Total::About(1100), STEPS, s(100), Some((s(100), 500)), "CC fs/inode.o"),
            "kernel: 500 of ~1100 steps (45 %), 5.0 steps/s, 1m40s, ~2m00s left: CC fs/inode.o"
        );
        assert_eq!(
            line("fuzz", 25_000, Total::Exact(100_000), CALLS, s(50), Some((s(50), 25_000)), ""),
            "fuzz: 25000 of 100000 calls (25 %), 500.0 calls/s, 50s, ~2m30s left"
        );
        assert_eq!(
            line("source", 76_500_000, Total::Exact(153_000_000), MB, s(10), Some((s(10), 76_500_000)), ""),
            "source: 76.5 of 153.0 MB (50 %), 7.7 MB/s, 10s, ~10s left"
        );
        assert_eq!(line("x", 0, Total::Unknown, ROWS, s(0), None, ""), "x: 0 rows, 0s");
        // The rate over the work itself: 2 minutes of build and boot before
        // the first row are not in it.
        assert_eq!(
            line("bench", 11, Total::About(49), ROWS, s(140), Some((s(20), 10)), ""),
            "bench: 11 of ~49 rows (22 %), 0.5 rows/s, 2m20s, ~1m16s left"
        );
        assert_eq!(line("t", 5, Total::Exact(9), ROWS, s(5), Some((s(0), 0)), ""), "t: 5 of 9 rows (55 %), 5s");
        // Past an estimate: no time left, at most 100 %.
        assert_eq!(
            line("k", 1200, Total::About(1100), STEPS, s(60), Some((s(60), 1200)), ""),
            "k: 1200 of ~1100 steps (100 %), 20.0 steps/s, 1m00s"
        );
        assert_eq!(duration(s(3725)), "1h02m");
    }

    #[test]
    fn plain_lines_are_occasional() {
        let mut p = Progress::with("t", Total::Exact(10), ROWS, false);
        p.buffer = Some(Vec::new());
        p.set(1, "");
        assert!(p.shown.is_none(), "nothing in the first 30 s");
        p.start -= PLAIN_EVERY;
        p.set(2, "a");
        p.set(3, "b");
        assert_eq!(p.done(), 3);
        p.finish("t done");
        let out = String::from_utf8(p.buffer.take().unwrap()).unwrap();
        assert!(out.starts_with("xtask: t: 2 of 10 rows (20 %), ") && out.contains(": a\nxtask: t done ("), "{out}");
        assert_eq!(out.lines().count(), 2, "not again within 30 s: {out}");
        assert!(!out.contains('\r'), "no terminal controls in a log: {out}");

        let mut live = Progress::with("t", Total::Exact(10), ROWS, true);
        live.buffer = Some(Vec::new());
        live.set(1, "a");
        live.set(2, "b");
        live.finish("");
        let out = String::from_utf8(live.buffer.take().unwrap()).unwrap();
        assert!(out.starts_with("\rt: 1 of 10 rows (10 %), 0s: a\x1b[K"), "a live line at once: {out:?}");
        assert!(out.ends_with("\r\x1b[K") && !out.contains('\n'), "redrawn in place, cleared at the end: {out:?}");
    }
}
