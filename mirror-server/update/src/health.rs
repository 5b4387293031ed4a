//! `mirror-update health`: is this boot a working mirror? boot-complete.target requires it, so
//! systemd-bless-boot marks a new version good only when it passes. Checks: the verified root
//! has refused no block, the data partition is mounted, wan0 has the profile's addresses, mirror-server answers locally, no unit failed.
//! It waits (bounded) for the checks to pass, since a boot settles over a minute or two, and
//! gives up early on a unit that stays failed. While wan0 has no link (a cable pulled, the
//! switch rebooting at 3 am) the wait is held rather than failed: no version can pass without
//! a link, so it says nothing about this one (bounded by `--link-wait`). Its verdict goes to the
//! console as MICROMIRROR-HEALTH, which remote hands and the update tests read, and to the state
//! partition, where the updater compares a failed trial with the previous version's verdict
//! (`plan::judge`).
//!
//! `mirror-update rollback` runs when the health unit fails: on a boot that is still on trial
//! it reboots, and systemd-boot's counters bring the previous version back; on a blessed boot
//! (nothing to go back to) it only says so.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use image::version::Standing;
use schema::profile::LoadedProfile;

use crate::machine::Machine;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// A failure of the surroundings that holds the verdict instead of failing it (no link).
    pub hold: bool,
    /// A failure no waiting mends (the kernel flagged the root corrupted): the verdict is given
    /// at once.
    pub lasting: bool,
}

impl Check {
    fn new(name: &'static str, ok: bool, detail: String) -> Check {
        Check { name, ok, detail, hold: false, lasting: false }
    }
}

/// Our own units: the health check cannot count itself (or its failure handler) as failed.
const OWN_UNITS: [&str; 2] = ["micromirror-health.service", "micromirror-rollback.service"];

pub fn checks(site: &LoadedProfile, data_mount: &str, http: &str) -> Vec<Check> {
    vec![root_intact(), data_mounted(data_mount), link(), addresses(site), server_answers(http), failed_units()]
}

/// The dm-verity root's own word: the kernel flags it corrupted ("C") once it refused a block
/// whose hash did not match, whatever the read was for. A damaged slot fails its version here,
/// and the verdict says why, rather than only through what the refused read broke.
fn root_intact() -> Check {
    let out = Command::new("dmsetup").args(["status", "root"]).output();
    match out {
        Ok(o) if o.status.success() => verity_check(&String::from_utf8_lossy(&o.stdout)),
        Ok(o) => {
            Check::new("root", false, format!("dmsetup status root: {}", String::from_utf8_lossy(&o.stderr).trim()))
        }
        Err(e) => Check::new("root", false, format!("dmsetup: {e}")),
    }
}

/// Reads `dmsetup status` of a verity target: "0 SECTORS verity V" (verified) or "… C".
fn verity_check(status: &str) -> Check {
    let mut fields = status.split_whitespace().skip_while(|f| *f != "verity").skip(1);
    match fields.next() {
        Some("V") => Check::new("root", true, "dm-verity: every block read so far matched".into()),
        Some("C") => Check {
            lasting: true,
            ..Check::new(
                "root",
                false,
                "dm-verity refused corrupted blocks of this root slot (the kernel log names them): the slot's bytes \
                 are damaged; the other version comes back, or, for the only one, reflash the box"
                    .into(),
            )
        },
        _ => Check::new("root", false, format!("the root is no dm-verity device: `{}`", status.trim())),
    }
}

/// wan0's carrier. No link holds the verdict; no wan0 at all is this version's fault (its
/// network configuration names the wrong device).
fn link() -> Check {
    let carrier = std::fs::read_to_string("/sys/class/net/wan0/carrier");
    match carrier.as_deref().map(str::trim) {
        Ok("1") => Check::new("link", true, "wan0 has a link".into()),
        _ if std::path::Path::new("/sys/class/net/wan0").exists() => {
            Check { hold: true, ..Check::new("link", false, "wan0 has no link (carrier down)".into()) }
        }
        _ => Check::new("link", false, "there is no wan0".into()),
    }
}

fn data_mounted(mount: &str) -> Check {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let ok = mounts.lines().any(|l| l.split(' ').nth(4) == Some(mount));
    Check::new("data", ok, if ok { format!("{mount} mounted") } else { format!("{mount} not mounted") })
}

/// The profile's static addresses on wan0 (a DHCP lab site: any global address).
fn addresses(site: &LoadedProfile) -> Check {
    let net = &site.profile.network;
    let wanted: Vec<String> = [net.ipv4.clone(), net.ipv6.clone()].into_iter().flatten().collect();
    let out = Command::new("ip").args(["-j", "addr", "show", "dev", "wan0"]).output();
    let have: Vec<String> = out
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.get(0).and_then(|i| i.get("addr_info")).and_then(|a| a.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| Some(format!("{}/{}", a.get("local")?.as_str()?, a.get("prefixlen")?.as_u64()?)))
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|w| !have.iter().any(|h| same_address(h, w))).collect();
    let ok = if wanted.is_empty() { !have.is_empty() } else { missing.is_empty() };
    let detail = if ok {
        format!("wan0 has {}", have.join(" "))
    } else if wanted.is_empty() {
        "wan0 has no address".into()
    } else {
        format!("wan0 lacks {}", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
    };
    Check::new("addresses", ok, detail)
}

/// "2001:db8::10/64" and "2001:db8:0::10/64" are one address.
fn same_address(a: &str, b: &str) -> bool {
    a.parse::<ipnet::IpNet>().ok().zip(b.parse::<ipnet::IpNet>().ok()).is_some_and(|(x, y)| x == y)
}

fn server_answers(url: &str) -> Check {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(r) if r.status().as_u16() < 500 => {
            Check::new("server", true, format!("{url} answered {}", r.status().as_u16()))
        }
        Ok(r) => Check::new("server", false, format!("{url} answered {}", r.status().as_u16())),
        Err(e) => Check::new("server", false, format!("{url}: {e}")),
    }
}

fn failed_units() -> Check {
    let out = Command::new("systemctl").args(["list-units", "--state=failed", "--plain", "--no-legend"]).output();
    match out {
        Ok(o) => {
            let mut failed: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .filter(|u| !OWN_UNITS.contains(&u.as_str()))
                .collect();
            failed.extend(crash_looping());
            let ok = failed.is_empty();
            Check::new("units", ok, if ok { "no failed unit".into() } else { format!("failed: {}", failed.join(" ")) })
        }
        Err(e) => Check::new("units", false, format!("systemctl: {e}")),
    }
}

/// The mirror's services restart on failure without end (a box in the field must keep
/// trying), so a service that crashes at every start is never "failed" to systemd; after a few
/// restarts without staying up it counts as failed here.
const WATCHED: [&str; 2] = ["mirror-server.service", "mirror-sync.service"];
const RESTARTS_THAT_FAIL: u32 = 3;
/// Up for less than this since its last start is not up yet: a service that dies a second
/// after each start is `active` for that second, and a poll landing in it must not clear it.
const STAYS_UP: Duration = Duration::from_secs(15);

fn crash_looping() -> Vec<String> {
    WATCHED
        .iter()
        .filter(|unit| {
            let out = Command::new("systemctl")
                .args(["show", "--property=NRestarts,ActiveState,ActiveEnterTimestampMonotonic", unit])
                .output();
            out.ok().is_some_and(|o| is_crash_looping(&String::from_utf8_lossy(&o.stdout), monotonic_now()))
        })
        .map(|u| format!("{u} (restarting)"))
        .collect()
}

/// CLOCK_MONOTONIC, the clock of systemd's `…TimestampMonotonic` properties.
fn monotonic_now() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(now.tv_sec.try_into().unwrap_or(0), now.tv_nsec.try_into().unwrap_or(0))
}

/// From `systemctl show --property=NRestarts,ActiveState,ActiveEnterTimestampMonotonic`:
/// restarted a few times and not up, or up for less than [`STAYS_UP`].
fn is_crash_looping(show: &str, now: Duration) -> bool {
    let value = |key: &str| show.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::trim);
    let restarts: u32 = value("NRestarts").and_then(|v| v.parse().ok()).unwrap_or(0);
    let up_since = value("ActiveEnterTimestampMonotonic").and_then(|v| v.parse().ok()).map(Duration::from_micros);
    let stayed_up =
        value("ActiveState") == Some("active") && up_since.is_some_and(|t| now.saturating_sub(t) >= STAYS_UP);
    restarts >= RESTARTS_THAT_FAIL && !stayed_up
}

/// How long a verdict may take.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Give up after this long (time held for a missing link not counted).
    pub limit: Duration,
    /// A unit failed for this long ends the wait at once.
    pub grace: Duration,
    /// The longest the verdict is held while the link is down.
    pub link_wait: Duration,
}

const POLL: Duration = Duration::from_secs(2);

/// Polls the checks until all pass, `limit` passes, a unit has stayed failed for `grace`, or a
/// failure is lasting; while a check holds (no link), neither clock runs, up to `link_wait`.
pub fn wait_for_verdict(bounds: Bounds, run: impl FnMut() -> Vec<Check>) -> (bool, Vec<Check>) {
    wait_polling(bounds, POLL, run)
}

fn wait_polling(bounds: Bounds, poll: Duration, mut run: impl FnMut() -> Vec<Check>) -> (bool, Vec<Check>) {
    let mut judged = Duration::ZERO;
    let mut held = Duration::ZERO;
    let mut failed_for = Duration::ZERO;
    let mut last = Instant::now();
    loop {
        let results = run();
        if results.iter().all(|c| c.ok) {
            return (true, results);
        }
        if results.iter().any(|c| !c.ok && c.lasting) {
            return (false, results);
        }
        let tick = last.elapsed();
        last = Instant::now();
        let holding = results.iter().any(|c| !c.ok && c.hold);
        if holding {
            // No link: units that need the network fail too; that is the surroundings' doing.
            held += tick;
            failed_for = Duration::ZERO;
            if held >= bounds.link_wait {
                return (false, results);
            }
        } else {
            judged += tick;
            let unit_failed = results.iter().any(|c| c.name == "units" && !c.ok);
            failed_for = if unit_failed { failed_for + tick } else { Duration::ZERO };
            if judged >= bounds.limit || (unit_failed && failed_for >= bounds.grace) {
                return (false, results);
            }
        }
        std::thread::sleep(poll);
    }
}

pub fn verdict_line(version: &str, healthy: bool, checks: &[Check]) -> String {
    let details: Vec<String> =
        checks.iter().filter(|c| !healthy || !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect();
    format!(
        "MICROMIRROR-HEALTH {} version={version}{}",
        if healthy { "ok" } else { "failed" },
        if details.is_empty() { String::new() } else { format!(" ({})", details.join("; ")) }
    )
}

/// What the console shows (the kernel log reaches it even with a getty on the tty).
pub fn say(line: &str) {
    println!("{line}");
    let _ = std::fs::write("/dev/kmsg", format!("{line}\n"));
}

/// After a failed health check: reboot if this boot is on trial and something else can boot.
pub fn rollback(m: &Machine) -> Result<bool> {
    let running = m.running()?;
    if crate::adopted::on_trial(m) {
        // BootNext was spent on this boot: the firmware's first entry, the old system, is next.
        say(&format!(
            "MICROMIRROR-ROLLBACK rebooting version={running} (adoption trial failed; the old system boots next)"
        ));
        let (prog, args) = m.reboot.split_first().context("no reboot command")?;
        Command::new(prog).args(args).status().context("rebooting")?;
        return Ok(true);
    }
    let entries = crate::entries::list(&m.esp)?;
    let mine = entries.iter().find(|e| e.version == running).map(|e| e.standing);
    let fallback = entries.iter().any(|e| e.version != running && e.standing != Standing::Failed);
    match mine {
        Some(Standing::Blessed) | None => {
            say(&format!("MICROMIRROR-ROLLBACK none version={running} (blessed: nothing to go back to)"));
            Ok(false)
        }
        Some(_) if !fallback => {
            say(&format!("MICROMIRROR-ROLLBACK none version={running} (no other bootable version)"));
            Ok(false)
        }
        Some(_) => {
            say(&format!(
                "MICROMIRROR-ROLLBACK rebooting version={running} (failed on trial; the previous version boots next)"
            ));
            let (prog, args) = m.reboot.split_first().context("no reboot command")?;
            Command::new(prog).args(args).status().context("rebooting")?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, ok: bool) -> Check {
        Check::new(name, ok, String::new())
    }

    fn bounds(limit_ms: u64, grace_ms: u64, link_wait_ms: u64) -> Bounds {
        Bounds {
            limit: Duration::from_millis(limit_ms),
            grace: Duration::from_millis(grace_ms),
            link_wait: Duration::from_millis(link_wait_ms),
        }
    }
    const FAST: Duration = Duration::from_millis(20);

    #[test]
    fn a_verdict_waits_for_a_settling_boot_and_gives_up_on_a_unit_that_stays_failed() {
        let mut n = 0;
        let (ok, _) = wait_polling(bounds(60_000, 60_000, 0), FAST, || {
            n += 1;
            vec![check("server", n > 2), check("units", true)]
        });
        assert!(ok && n == 3);
        let mut polls = 0;
        let (ok, results) = wait_polling(bounds(600_000, 100, 0), FAST, || {
            polls += 1;
            vec![check("server", false), check("units", false)]
        });
        assert!(!ok && results.len() == 2);
        assert!(polls < 100, "a failed unit ends the wait early ({polls} polls)");
    }

    #[test]
    fn a_lasting_failure_ends_the_wait_at_once() {
        let mut polls = 0;
        let (ok, results) = wait_polling(bounds(600_000, 600_000, 0), FAST, || {
            polls += 1;
            vec![Check { lasting: true, ..check("root", false) }, check("units", true)]
        });
        assert!(!ok && results[0].name == "root" && polls == 1, "{polls} polls");
    }

    #[test]
    fn no_link_holds_the_verdict_instead_of_failing_it_but_not_for_ever() {
        let down = || Check { hold: true, ..check("link", false) };
        // The link is down for longer than the whole limit, then comes back: the boot passes.
        let mut n = 0;
        let (ok, _) = wait_polling(bounds(100, 100, 60_000), FAST, || {
            n += 1;
            if n < 20 {
                vec![down(), check("addresses", false), check("units", false)]
            } else {
                vec![check("link", true), check("addresses", true), check("units", true)]
            }
        });
        assert!(ok, "held through {n} polls without a link, then judged on its own");
        // A link that never comes back ends the hold at link_wait, failed with the link named.
        let (ok, results) = wait_polling(bounds(100, 100, 300), FAST, || vec![down(), check("addresses", false)]);
        assert!(!ok && results[0].name == "link" && results[0].hold);
    }

    #[test]
    fn a_service_that_keeps_restarting_counts_as_failed() {
        let now = Duration::from_secs(100);
        let show = |restarts: u32, state: &str, up_since_s: u64| {
            format!(
                "NRestarts={restarts}\nActiveState={state}\nActiveEnterTimestampMonotonic={}\n",
                up_since_s * 1_000_000
            )
        };
        assert!(is_crash_looping(&show(4, "activating", 90), now));
        assert!(is_crash_looping(&show(4, "active", 99), now), "caught in the second it is up: still looping");
        assert!(!is_crash_looping(&show(4, "active", 60), now), "up again after restarts, and staying: fine");
        assert!(!is_crash_looping(&show(1, "activating", 90), now), "one restart is not a loop");
        assert!(is_crash_looping("NRestarts=4\nActiveState=active\n", now), "no start time: not shown to stay up");
    }

    #[test]
    fn the_root_check_reads_dm_verity_s_status() {
        assert!(verity_check("0 532480 verity V\n").ok);
        let bad = verity_check("0 532480 verity C\n");
        assert!(!bad.ok && bad.lasting && bad.detail.contains("corrupted blocks"), "{bad:?}");
        assert!(!verity_check("0 532480 linear\n").ok);
    }

    #[test]
    fn addresses_compare_by_value() {
        assert!(same_address("2001:db8:0:1::10/64", "2001:db8:0:1:0::10/64"));
        assert!(!same_address("192.0.2.10/24", "192.0.2.10/25"));
    }

    #[test]
    fn the_verdict_line_names_what_failed() {
        let line = verdict_line("20261201.000000", false, &[Check::new("server", false, "refused".into())]);
        assert_eq!(line, "MICROMIRROR-HEALTH failed version=20261201.000000 (server: refused)");
        assert_eq!(verdict_line("v", true, &[check("data", true)]), "MICROMIRROR-HEALTH ok version=v");
    }
}
