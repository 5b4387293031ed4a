//! Certificates that renew themselves: an ACME (RFC 8555) client with the HTTP-01 challenge
//! answered by our own port-80 listener. The account key and the certificate live under the
//! state folder (/var/lib/micromirror/acme), so a restart reuses them; renewal starts at two
//! thirds of the lifetime (minus a random slice, so a fleet does not renew in one burst), failed
//! attempts back off, and the certificate in use stays in use until a new one is in hand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::tls::{self, CertStore};

/// Where HTTP-01 tokens are served from (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    pub directory: String,
    pub contact: Option<String>,
    /// A CA for the ACME server's own HTTPS (test or private CAs); the system roots otherwise.
    pub ca_file: Option<PathBuf>,
    pub names: Vec<String>,
    pub state_dir: PathBuf,
}

/// Pending HTTP-01 answers: token → key authorization.
#[derive(Debug, Default)]
pub struct Challenges(Mutex<HashMap<String, String>>);

impl Challenges {
    pub fn answer(&self, token: &str) -> Option<String> {
        self.0.lock().ok()?.get(token).cloned()
    }
    fn put(&self, token: String, key_authorization: String) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(token, key_authorization);
        }
    }
    fn clear(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }
}

/// Counters for the metrics listener.
#[derive(Debug, Default)]
pub struct AcmeStats {
    pub issued: AtomicU64,
    pub failures: AtomicU64,
}

/// When to renew: two thirds into the lifetime, pulled earlier by up to a thirtieth of it
/// (`jitter` in [0, 1)), e.g. day 57–60 of a 90-day certificate.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let at = lifetime.mul_f64(2.0 / 3.0 - jitter.clamp(0.0, 1.0) / 30.0);
    not_before + at
}

/// The renewal time of the certificate in use, drawn once per certificate: waking every hour
/// must not draw the jitter again (each new draw can only pull the time earlier, which bunches
/// a fleet's renewals at the start of the window).
#[derive(Debug, Default)]
pub struct RenewalPlan {
    /// (the certificate's not_after, its renewal time)
    drawn: Option<(SystemTime, SystemTime)>,
}

impl RenewalPlan {
    pub fn due(&mut self, not_before: SystemTime, not_after: SystemTime, draw: impl FnOnce() -> f64) -> SystemTime {
        match self.drawn {
            Some((for_cert, at)) if for_cert == not_after => at,
            _ => {
                let at = renewal_due(not_before, not_after, draw());
                self.drawn = Some((not_after, at));
                at
            }
        }
    }
}

/// Wait after the `failures`-th failed attempt in a row: 3 min doubling to 6 h, ± 20 % — at
/// most five failed validations in the first hour (Let's Encrypt's limit per name and account).
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(180).saturating_mul(1 << failures.saturating_sub(1).min(9));
    base.min(Duration::from_secs(6 * 3600)).mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs between boxes and runs; enough for spreading timers.
pub fn jitter() -> f64 {
    fastrand::f64()
}

fn cert_path(dir: &Path) -> PathBuf {
    dir.join("fullchain.pem")
}
fn key_path(dir: &Path) -> PathBuf {
    dir.join("privkey.pem")
}

/// Loads the certificate a previous run obtained, if it is still usable.
pub fn load_stored(config: &AcmeConfig) -> Option<tls::Loaded> {
    let loaded = tls::load_files(&cert_path(&config.state_dir), &key_path(&config.state_dir)).ok()?;
    (loaded.not_after > SystemTime::now()).then_some(loaded)
}

/// Keeps a valid certificate in `store` for as long as the server runs.
pub async fn run(config: AcmeConfig, store: Arc<CertStore>, challenges: Arc<Challenges>, stats: Arc<AcmeStats>) {
    if let Some(stored) = load_stored(&config) {
        tracing::info!(not_after = ?stored.not_after, "using the stored ACME certificate");
        store.set(stored);
    }
    let mut failures = 0u32;
    let mut plan = RenewalPlan::default();
    loop {
        let due = match store.current() {
            Some(c) => plan.due(c.not_before, c.not_after, jitter),
            None => SystemTime::now(),
        };
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            // Wake at least hourly: the clock may jump (a box without RTC battery).
            tokio::time::sleep(wait.min(Duration::from_secs(3600))).await;
            continue;
        }
        match obtain(&config, &challenges).await {
            Ok(loaded) => {
                tracing::info!(names = ?config.names, not_after = ?loaded.not_after, "certificate obtained");
                store.set(loaded);
                stats.issued.fetch_add(1, Ordering::Relaxed);
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                stats.failures.fetch_add(1, Ordering::Relaxed);
                let wait = retry_delay(failures, jitter());
                tracing::error!(error = %format!("{e:#}"), retry_in_s = wait.as_secs(), "ACME: no new certificate; keeping the one in use");
                tokio::time::sleep(wait).await;
            }
        }
        challenges.clear();
    }
}

async fn account(config: &AcmeConfig) -> Result<Account> {
    let path = config.state_dir.join("account.json");
    let builder = || -> Result<_> {
        Ok(match &config.ca_file {
            Some(ca) => {
                Account::builder_with_root(ca).with_context(|| format!("loading the ACME CA {}", ca.display()))?
            }
            None => Account::builder()?,
        })
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let creds: AccountCredentials =
            serde_json::from_str(&text).with_context(|| format!("{} is not an ACME account", path.display()))?;
        // An account from another directory (a changed profile) is not reused.
        if text.contains(&config.directory) {
            return builder()?.from_credentials(creds).await.context("restoring the ACME account");
        }
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let (account, creds) = builder()?
        .create(&new, config.directory.clone(), None)
        .await
        .with_context(|| format!("creating an ACME account at {}", config.directory))?;
    write_private(&path, serde_json::to_string(&creds)?.as_bytes())?;
    Ok(account)
}

/// One issuance: order, HTTP-01 for every name, finalize, download; written to the state folder.
pub async fn obtain(config: &AcmeConfig, challenges: &Challenges) -> Result<tls::Loaded> {
    std::fs::create_dir_all(&config.state_dir).with_context(|| format!("creating {}", config.state_dir.display()))?;
    let account = account(config).await?;
    let identifiers: Vec<Identifier> = config.names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.context("placing the order")?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.context("reading an authorization")?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => bail!("authorization for {} is {other:?}", authz.identifier()),
        }
        let mut challenge =
            authz.challenge(ChallengeType::Http01).ok_or_else(|| anyhow!("the CA offers no http-01 challenge"))?;
        challenges.put(challenge.token.clone(), challenge.key_authorization().as_str().to_string());
        challenge.set_ready().await.context("answering the challenge")?;
    }
    let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
    let status = order.poll_ready(&retries).await.context("waiting for validation")?;
    if status != OrderStatus::Ready {
        let detail = order.state().error.as_ref().map(|p| format!(": {p}")).unwrap_or_default();
        bail!("the order is {status:?}{detail} (is port 80 reachable from the CA for {:?}?)", config.names);
    }
    let key_pem = order.finalize().await.context("finalizing the order")?;
    let chain_pem = order.poll_certificate(&retries).await.context("downloading the certificate")?;
    let loaded = tls::parse_pem(chain_pem.as_bytes(), key_pem.as_bytes(), &cert_path(&config.state_dir))?;
    // Key first: a crash between the two leaves a mismatch that load_stored refuses.
    write_private(&key_path(&config.state_dir), key_pem.as_bytes())?;
    write_private(&cert_path(&config.state_dir), chain_pem.as_bytes())?;
    Ok(loaded)
}

/// Writes a file readable only by us, atomically (rename over the old one).
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_two_thirds_in_with_at_most_a_thirtieth_of_jitter() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(90 * 86400);
        let day = |t: SystemTime| t.duration_since(nb).unwrap().as_secs_f64() / 86400.0;
        assert!((day(renewal_due(nb, na, 0.0)) - 60.0).abs() < 1e-6);
        assert!((day(renewal_due(nb, na, 0.999_999)) - 57.0).abs() < 1e-3);
        assert!((day(renewal_due(nb, na, 7.0)) - 57.0).abs() < 1e-3, "jitter is clamped");
    }

    #[test]
    fn the_renewal_time_is_drawn_once_per_certificate() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(90 * 86400);
        let mut plan = RenewalPlan::default();
        let mut draws = vec![0.9, 0.1, 0.5].into_iter();
        let first = plan.due(nb, na, || draws.next().unwrap());
        // Hourly wakes for the same certificate keep the first draw.
        for _ in 0..24 {
            assert_eq!(plan.due(nb, na, || draws.next().unwrap()), first);
        }
        assert_eq!(first, renewal_due(nb, na, 0.9));
        // A new certificate gets a new draw.
        let na2 = na + Duration::from_secs(60 * 86400);
        assert_eq!(
            plan.due(na - Duration::from_secs(86400), na2, || draws.next().unwrap()),
            renewal_due(na - Duration::from_secs(86400), na2, 0.1)
        );
    }

    #[test]
    fn retries_back_off_from_three_minutes_to_six_hours() {
        assert_eq!(retry_delay(1, 0.5), Duration::from_secs(180));
        assert_eq!(retry_delay(2, 0.5), Duration::from_secs(360));
        assert_eq!(retry_delay(30, 0.5), Duration::from_secs(6 * 3600));
        assert!(retry_delay(1, 0.0) >= Duration::from_secs(144) && retry_delay(1, 0.999) <= Duration::from_secs(216));
        // Even with the shortest jitter, the sixth attempt comes more than an hour after the first.
        let sixth: Duration = (1..=5).map(|n| retry_delay(n, 0.0)).sum();
        assert!(sixth > Duration::from_secs(3600), "{sixth:?}");
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
