//! Rate limiting like the fleet's nginx limit_req: clients inside a rule's prefixes draw from a
//! token bucket (e.g. 5 requests/s, burst 300) and get a 429 when it is empty — one bucket per
//! client, or one shared by the whole prefix set (a cloud provider's crawlers as one). The
//! allowlist is never limited. Clients outside every prefix cost one prefix scan and no lock.
//!
//! Memory stays bounded without a sweep that one request pays for: each request also looks at
//! the two oldest touches and forgets buckets that have refilled (a full bucket carries no
//! information), and at the hard cap the oldest bucket is forgotten at once.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub prefixes: Vec<IpNet>,
    pub per_second: f64,
    pub burst: f64,
    /// One bucket for every client of the rule instead of one each.
    pub shared: bool,
}

/// A bucket: the rule, and the client when buckets are per client.
type Key = (usize, Option<IpAddr>);

#[derive(Default)]
struct Buckets {
    /// Tokens left and when they were counted.
    tokens: HashMap<Key, (f64, Instant)>,
    /// Every touch, oldest first; a touch is stale once its bucket was touched again.
    touches: VecDeque<(Key, Instant)>,
}

#[derive(Default)]
pub struct Limiter {
    rules: Vec<Rule>,
    allow: Vec<IpNet>,
    buckets: Mutex<Buckets>,
}

/// Buckets kept at the most (about 10 MB); beyond, the oldest is forgotten.
const MAX_BUCKETS: usize = 100_000;
/// Old touches looked at per request.
const PRUNE_PER_REQUEST: usize = 2;

impl Limiter {
    pub fn new(rules: Vec<Rule>, allow: Vec<IpNet>) -> Limiter {
        Limiter { rules, allow, buckets: Mutex::default() }
    }

    pub fn allow(&self, client: IpAddr) -> bool {
        self.allow_at(client, Instant::now())
    }

    pub fn allow_at(&self, client: IpAddr, now: Instant) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
            v4 => v4,
        };
        if self.allow.iter().any(|n| n.contains(&client)) {
            return true;
        }
        let Some(idx) = self.rules.iter().position(|r| r.prefixes.iter().any(|n| n.contains(&client))) else {
            return true;
        };
        let rule = &self.rules[idx];
        let key = (idx, (!rule.shared).then_some(client));
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        b.prune(&self.rules, now);
        let (tokens, at) = b.tokens.entry(key).or_insert((rule.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rule.per_second).min(rule.burst);
        *at = now;
        let allowed = *tokens >= 1.0;
        if allowed {
            *tokens -= 1.0;
        }
        b.touches.push_back((key, now));
        allowed
    }

    /// Buckets held now (for tests and the curious).
    pub fn len(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.tokens.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Buckets {
    /// Bounded work: a few of the oldest touches, plus one forced eviction at the cap.
    fn prune(&mut self, rules: &[Rule], now: Instant) {
        for _ in 0..PRUNE_PER_REQUEST {
            let Some(&(key, touched)) = self.touches.front() else { return };
            match self.tokens.get(&key) {
                // Touched again since: this entry is stale, the later one stands for it.
                Some((_, at)) if *at != touched => {}
                Some((tokens, at)) => {
                    let rule = &rules[key.0];
                    let refilled = tokens + now.saturating_duration_since(*at).as_secs_f64() * rule.per_second;
                    if refilled < rule.burst && self.tokens.len() < MAX_BUCKETS {
                        return;
                    }
                    self.tokens.remove(&key);
                }
                None => {}
            }
            self.touches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rule(prefix: &str, per_second: f64, burst: f64, shared: bool) -> Rule {
        Rule { prefixes: vec![prefix.parse().unwrap()], per_second, burst, shared }
    }

    #[test]
    fn burst_then_rate_then_allowlist() {
        let l = Limiter::new(vec![rule("203.0.113.0/24", 5.0, 10.0, false)], vec!["203.0.113.7/32".parse().unwrap()]);
        let t0 = Instant::now();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!((0..20).filter(|_| l.allow_at(client, t0)).count(), 10);
        assert!(l.allow_at(client, t0 + Duration::from_millis(200)));
        assert!(!l.allow_at(client, t0 + Duration::from_millis(210)));
        assert!((0..50).all(|_| l.allow_at("203.0.113.7".parse().unwrap(), t0)));
        assert!((0..50).all(|_| l.allow_at("198.51.100.1".parse().unwrap(), t0)));
        assert!(!l.allow_at("::ffff:203.0.113.9".parse().unwrap(), t0 + Duration::from_millis(210)));
    }

    #[test]
    fn a_shared_bucket_limits_a_whole_provider_as_one() {
        let l = Limiter::new(vec![rule("198.51.100.0/24", 5.0, 10.0, true)], vec![]);
        let t0 = Instant::now();
        // Ten crawlers of one provider together get the burst of one.
        let allowed = (0..100).filter(|i| l.allow_at(format!("198.51.100.{}", i % 10).parse().unwrap(), t0)).count();
        assert_eq!(allowed, 10);
        assert_eq!(l.len(), 1, "one bucket for the rule, not one per client");
        let per_client = Limiter::new(vec![rule("198.51.100.0/24", 5.0, 10.0, false)], vec![]);
        let allowed =
            (0..100).filter(|i| per_client.allow_at(format!("198.51.100.{}", i % 10).parse().unwrap(), t0)).count();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn refilled_buckets_are_forgotten_a_few_per_request() {
        let l = Limiter::new(vec![rule("10.0.0.0/8", 5.0, 10.0, false)], vec![]);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            l.allow_at(IpAddr::V4((0x0a00_0000 + i).into()), t0);
        }
        assert_eq!(l.len(), 1000, "fresh buckets are kept");
        // Two seconds later every bucket has refilled: each request forgets two, never more.
        let later = t0 + Duration::from_secs(2);
        let before = l.len();
        l.allow_at("10.255.0.1".parse().unwrap(), later);
        assert!(l.len() > before - PRUNE_PER_REQUEST, "bounded work per request");
        for _ in 0..2000 {
            l.allow_at("10.255.0.1".parse().unwrap(), later);
        }
        assert!(l.len() <= 2, "refilled buckets are gone: {}", l.len());
    }
}
