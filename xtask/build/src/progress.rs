//! Progress for long stages: indicatif spinners with elapsed time on a terminal (one line per
//! stage under way: two stages may run at once), plain lines when stderr is not one (CI logs).

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Every spinner on the terminal, so concurrent stages do not draw over each other.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

pub struct Stage {
    name: String,
    started: Instant,
    bar: Option<ProgressBar>,
}

/// Starts a stage; finish it with `done` (or it reports as abandoned when dropped).
pub fn stage(name: &str, what: &str) -> Stage {
    let bar = if std::io::stderr().is_terminal() {
        let bar = bars().add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:>8} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_string());
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        eprintln!("[{name}] {what}");
        None
    };
    Stage { name: name.to_string(), started: Instant::now(), bar }
}

impl Stage {
    pub fn message(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_string()),
            None => eprintln!("[{}] {msg}", self.name),
        }
    }

    pub fn done(mut self, summary: &str) -> Duration {
        let elapsed = self.started.elapsed();
        let line = format!("{:>8} {summary} ({:.1} s)", self.name, elapsed.as_secs_f64());
        match self.bar.take() {
            Some(bar) => {
                bar.finish_and_clear();
                bars().remove(&bar);
                let _ = bars().println(&line);
            }
            None => eprintln!("{line}"),
        }
        elapsed
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon_with_message(format!(
                "{} failed after {:.1} s",
                self.name,
                self.started.elapsed().as_secs_f64()
            ));
        }
    }
}

pub use schema::human::human_bytes;
