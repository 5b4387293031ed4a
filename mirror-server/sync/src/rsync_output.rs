//! Reading what rsync says: its exit codes (which are failures, which retry) and its --stats
//! summary. Pure.

use schema::status::Stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMeaning {
    Ok,
    /// 24: files vanished upstream during the transfer — normal on a live mirror.
    OkVanished,
    /// 25: --max-delete stopped deletions.
    MaxDeleteHit,
    /// Network trouble worth retrying with backoff (10, 12, 30, 35).
    Transient,
    /// 11: local I/O error, e.g. the disk is full.
    LocalIo,
    Fatal,
}

pub fn exit_meaning(code: i32) -> ExitMeaning {
    match code {
        0 => ExitMeaning::Ok,
        24 => ExitMeaning::OkVanished,
        25 => ExitMeaning::MaxDeleteHit,
        5 | 10 | 12 | 30 | 35 => ExitMeaning::Transient,
        11 => ExitMeaning::LocalIo,
        _ => ExitMeaning::Fatal,
    }
}

pub fn describe_exit(code: i32) -> &'static str {
    match code {
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files",
        5 => "error starting client-server protocol (is the module there?)",
        10 => "error in socket I/O (upstream unreachable?)",
        11 => "error in file I/O (disk full?)",
        12 => "error in rsync protocol data stream (connection dropped?)",
        20 => "killed by a signal",
        23 => "partial transfer due to error",
        24 => "some files vanished upstream",
        25 => "max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        _ => "rsync failed",
    }
}

/// What rsync said went wrong, in its own words: its `rsync:` and `@ERROR` lines (the cause),
/// not the `rsync error:` summary, which only repeats the exit code. At most 400 characters.
pub fn cause(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| (l.starts_with("rsync:") || l.starts_with("@ERROR")) && !l.starts_with("rsync error:"))
        .collect();
    let mut text = lines.join("; ");
    if text.len() > 400 {
        let cut = (0..=400).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Adds the figures of one pass's --stats block to `into`.
pub fn add_stats(output: &str, into: &mut Stats) {
    for line in output.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = |v: &str| -> u64 {
            let digits: String =
                v.split_whitespace().next().unwrap_or("").chars().filter(|c| c.is_ascii_digit()).collect();
            digits.parse().unwrap_or(0)
        };
        match key.trim() {
            "Number of regular files transferred" => into.files_transferred += number(value),
            "Total bytes received" => into.bytes_received += number(value),
            // "Number of files: 1,234 (reg: 1,000, dir: 234)": keep the regular-file count.
            "Number of files" => {
                if let Some(reg) = value.split("reg:").nth(1) {
                    into.files_total = number_with_commas(reg);
                }
            }
            "Number of deleted files" => into.files_deleted += number(value),
            "Total file size" => into.tree_bytes = into.tree_bytes.max(number(value)),
            _ => {}
        }
    }
}

/// "1,234, dir: 5)" → 1234: digits and thousands separators up to the first other character.
fn number_with_commas(s: &str) -> u64 {
    let s = s.trim_start();
    let mut digits = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else if c == ',' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            continue;
        } else {
            break;
        }
    }
    digits.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "\
*deleting   old.rpm
>f+++++++++ new.rpm

Number of files: 1,234 (reg: 1,200, dir: 34)
Number of created files: 1 (reg: 1)
Number of deleted files: 1 (reg: 1)
Number of regular files transferred: 17
Total file size: 5,000,000 bytes
Total transferred file size: 40,000 bytes
Total bytes sent: 1,000
Total bytes received: 41,234
";

    #[test]
    fn reads_the_stats_block() {
        let mut s = Stats::default();
        add_stats(STATS, &mut s);
        assert_eq!(s.files_transferred, 17);
        assert_eq!(s.bytes_received, 41_234);
        assert_eq!(s.files_deleted, 1);
        assert_eq!(s.files_total, 1200);
        add_stats(STATS, &mut s);
        assert_eq!(s.files_transferred, 34);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_meaning(24), ExitMeaning::OkVanished);
        assert_eq!(exit_meaning(10), ExitMeaning::Transient);
        assert_eq!(exit_meaning(25), ExitMeaning::MaxDeleteHit);
        assert_eq!(exit_meaning(11), ExitMeaning::LocalIo);
        assert_eq!(exit_meaning(23), ExitMeaning::Fatal);
    }

    #[test]
    fn the_cause_is_rsyncs_own_words_without_the_summary() {
        let out = "rsync: [Receiver] failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)\n\
                   rsync error: error in socket IO (code 10) at clientserver.c(139) [Receiver=3.2.7]\n";
        assert_eq!(
            cause(out),
            "rsync: [Receiver] failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)"
        );
        assert_eq!(cause("@ERROR: Unknown module 'x'\nrsync error: ...\n"), "@ERROR: Unknown module 'x'");
        assert_eq!(cause("nothing useful\n"), "");
        assert!(cause(&"rsync: é long\n".repeat(100)).chars().count() <= 401);
    }
}
