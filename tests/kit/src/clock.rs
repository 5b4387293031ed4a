//! A wall clock the test can step for the processes it starts: Debian's libfaketime, preloaded,
//! reads the offset from a file on every call, so a running daemon sees the clock jump a day
//! forward or back (a box without an RTC battery, an NTP step). Only the wall clock moves:
//! monotonic time, which timers run on, is left alone.

use std::path::{Path, PathBuf};

/// Preloaded into the processes under test (the thread-safe build: our servers are threaded).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

pub struct SteppedClock {
    file: PathBuf,
    offset_s: i64,
}

impl SteppedClock {
    /// A clock that starts at the real time.
    pub fn new(dir: &Path) -> SteppedClock {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing (Debian package libfaketime; `cargo xtask test` installs it)"
        );
        let file = dir.join(format!("faketime-{}", crate::free_port()));
        let clock = SteppedClock { file, offset_s: 0 };
        clock.write();
        clock
    }

    /// The environment that puts a process on this clock.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", LIBFAKETIME.to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
    }

    /// Moves the clock by `seconds` (negative: back) from where it is.
    pub fn step(&mut self, seconds: i64) {
        self.offset_s += seconds;
        self.write();
    }

    /// What the processes on this clock read as now (Unix seconds).
    pub fn now(&self) -> i64 {
        let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        real + self.offset_s
    }

    fn write(&self) {
        std::fs::write(&self.file, format!("{:+}\n", self.offset_s)).expect("the clock's offset file");
    }
}
