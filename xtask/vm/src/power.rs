//! A VM's power: the QEMU running now, and a supervisor thread that waits for it to end. When
//! the guest reset itself (its reboot, the watchdog, a triple fault) and the VM power-cycles,
//! the supervisor starts a fresh QEMU on the same disk, firmware variables and console file;
//! otherwise it records how the VM ended.
//!
//! How QEMU ended is QEMU's own word: its QMP `SHUTDOWN` event (reason `guest-reset` or
//! `guest-shutdown`), read from its standard output; with `-no-reboot` both end the process.
//! It never signals a process it did not start, and never starts one after `stop`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::{kill_process_group, Pid, Signal};

use crate::{Config, Serial};

/// The QEMU running now, and how the VM ended once it has.
#[derive(Default)]
struct State {
    pid: u32,
    /// Whether `pid` leads a process group of its own (not so on a terminal).
    own_group: bool,
    cycles: u32,
    stopping: bool,
    /// How the VM ended: QEMU's exit status, or what went wrong, in words.
    ended: Option<Result<ExitStatus, String>>,
}

pub(crate) struct Power {
    state: Mutex<State>,
}

/// One QEMU process, and where its `SHUTDOWN` reason arrives when it power-cycles.
struct Running {
    child: Child,
    shutdown_reason: Option<Receiver<Option<String>>>,
}

/// Starts the first QEMU (its errors are the caller's) and the supervisor that follows it.
pub(crate) fn start(config: Config) -> Result<(Arc<Power>, JoinHandle<()>)> {
    let first = spawn(&config)?;
    let power = Arc::new(Power {
        state: Mutex::new(State {
            pid: first.child.id(),
            own_group: matches!(config.serial, Serial::File(_)),
            ..State::default()
        }),
    });
    let supervisor = {
        let power = Arc::clone(&power);
        std::thread::Builder::new()
            .name("vm-power".into())
            .spawn(move || power.supervise(&config, first))
            .context("starting the VM's supervisor thread")?
    };
    Ok((power, supervisor))
}

impl Power {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the state as readable as before.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.lock().pid
    }

    pub(crate) fn cycles(&self) -> u32 {
        self.lock().cycles
    }

    pub(crate) fn ended(&self) -> Option<Result<ExitStatus, String>> {
        self.lock().ended.clone()
    }

    fn supervise(&self, config: &Config, mut running: Running) {
        loop {
            let status = running.child.wait();
            // QEMU wrote its event before it exited; the reader hands it over at end of output.
            let reason =
                running.shutdown_reason.take().and_then(|r| r.recv_timeout(Duration::from_secs(10)).ok()).flatten();
            let mut state = self.lock();
            let reset = reason.as_deref() == Some("guest-reset");
            if state.stopping || !reset {
                state.ended = Some(status.map_err(|e| format!("waiting for QEMU: {e}")));
                return;
            }
            note_power_cycle(config, state.cycles + 1);
            // Started under the lock, so `stop` either sees this QEMU or keeps it from starting.
            match spawn(config) {
                Ok(next) => {
                    state.pid = next.child.id();
                    state.cycles += 1;
                    running = next;
                }
                Err(e) => {
                    state.ended = Some(Err(format!("QEMU could not start again after the guest's reset: {e:#}")));
                    return;
                }
            }
        }
    }

    /// Ends the QEMU running now (TERM, then KILL after 20 s) and any power cycle after it.
    pub(crate) fn stop(&self) {
        let (pid, own_group) = {
            let mut state = self.lock();
            state.stopping = true;
            if state.ended.is_some() {
                return;
            }
            (state.pid, state.own_group)
        };
        let Some(pid) = Pid::from_raw(pid as i32) else { return };
        let signal = |s| {
            let _ = if own_group { kill_process_group(pid, s) } else { rustix::process::kill_process(pid, s) };
        };
        signal(Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.lock().ended.is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        signal(Signal::KILL);
    }
}

/// Starts one QEMU for `config`.
fn spawn(config: &Config) -> Result<Running> {
    let mut c = config.command();
    if let Some(socket) = config.keyboard_socket() {
        let _ = fs_err::remove_file(socket);
    }
    if matches!(config.serial, Serial::File(_)) {
        // Standard I/O carries QMP when the VM power-cycles, and nothing otherwise.
        let io = || if config.power_cycles() { Stdio::piped() } else { Stdio::null() };
        c.stdin(io()).stdout(io()).process_group(0);
    }
    let mut child = c.spawn().context("starting QEMU (setpriv and qemu-system-x86_64)")?;
    let shutdown_reason = match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => Some(read_shutdown_reason(stdin, stdout)?),
        _ => None,
    };
    Ok(Running { child, shutdown_reason })
}

/// Speaks QMP on QEMU's standard I/O: enters command mode, then keeps the last `SHUTDOWN`
/// event's reason, sent when QEMU's output ends.
fn read_shutdown_reason(mut stdin: ChildStdin, stdout: ChildStdout) -> Result<Receiver<Option<String>>> {
    let (send, receive) = mpsc::channel();
    std::thread::Builder::new()
        .name("vm-qmp".into())
        .spawn(move || {
            // QEMU sends its greeting first and events only once capabilities are negotiated.
            let _ = stdin.write_all(b"{\"execute\":\"qmp_capabilities\"}\n");
            let mut reason = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(r) = shutdown_reason(&line) {
                    reason = Some(r);
                }
            }
            drop(stdin);
            let _ = send.send(reason);
        })
        .context("starting the VM's QMP reader thread")?;
    Ok(receive)
}

/// The reason of a QMP `SHUTDOWN` event line, e.g. `guest-reset`.
fn shutdown_reason(line: &str) -> Option<String> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event.get("event")?.as_str()? != "SHUTDOWN" {
        return None;
    }
    Some(event.get("data")?.get("reason")?.as_str()?.to_string())
}

/// A line in the console file between two QEMUs, so a reader of the log sees the cold start.
fn note_power_cycle(config: &Config, cycle: u32) {
    if let Serial::File(log) = &config.serial {
        let note = format!("\n[vm] the guest reset; power cycle {cycle}: a fresh QEMU cold-starts the disk\n");
        if let Ok(mut file) = fs_err::OpenOptions::new().append(true).open(log) {
            let _ = file.write_all(note.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shutdown_reason;

    #[test]
    fn only_a_shutdown_event_gives_a_reason() {
        let reset = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}"#;
        assert_eq!(shutdown_reason(reset).as_deref(), Some("guest-reset"));
        let off = r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#;
        assert_eq!(shutdown_reason(off).as_deref(), Some("guest-shutdown"));
        assert_eq!(shutdown_reason(r#"{"event": "WATCHDOG", "data": {"action": "reset"}}"#), None);
        assert_eq!(shutdown_reason(r#"{"QMP": {"version": {}}}"#), None);
        assert_eq!(shutdown_reason("not json"), None);
    }
}
