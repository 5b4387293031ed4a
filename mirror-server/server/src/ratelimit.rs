//! Rate limiting like the fleet's nginx limit_req: clients inside configured prefixes get a token
//! bucket each (e.g. 5 requests/s, burst 300) and a 429 when it is empty; the allowlist is never
//! limited. Clients outside every prefix cost one prefix scan and no lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use ipnet::IpNet;

#[derive(Debug, Clone)]
pub struct Rule {
    pub prefixes: Vec<IpNet>,
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Default)]
pub struct Limiter {
    rules: Vec<Rule>,
    allow: Vec<IpNet>,
    buckets: Mutex<HashMap<(usize, IpAddr), (f64, Instant)>>,
}

const MAX_BUCKETS: usize = 100_000;

impl Limiter {
    pub fn new(rules: Vec<Rule>, allow: Vec<IpNet>) -> Limiter {
        Limiter { rules, allow, buckets: Mutex::new(HashMap::new()) }
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
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() > MAX_BUCKETS {
            // Full buckets carry no information; drop them all rather than grow without bound.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rule.per_second < rule.burst
            });
        }
        let (tokens, at) = buckets.entry((idx, client)).or_insert((rule.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rule.per_second).min(rule.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate_then_allowlist() {
        let l = Limiter::new(
            vec![Rule { prefixes: vec!["203.0.113.0/24".parse().unwrap()], per_second: 5.0, burst: 10.0 }],
            vec!["203.0.113.7/32".parse().unwrap()],
        );
        let t0 = Instant::now();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!((0..20).filter(|_| l.allow_at(client, t0)).count(), 10);
        assert!(l.allow_at(client, t0 + Duration::from_millis(200)));
        assert!(!l.allow_at(client, t0 + Duration::from_millis(210)));
        assert!((0..50).all(|_| l.allow_at("203.0.113.7".parse().unwrap(), t0)));
        assert!((0..50).all(|_| l.allow_at("198.51.100.1".parse().unwrap(), t0)));
        assert!(!l.allow_at("::ffff:203.0.113.9".parse().unwrap(), t0 + Duration::from_millis(210)));
    }
}
