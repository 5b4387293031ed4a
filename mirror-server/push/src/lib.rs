//! MQTT push listening, shared by mirror-sync (the upstream's "this project changed") and
//! mirror-update ("a new image is published"): connect to the broker, subscribe to one filter,
//! hand every message's topic to the caller, and reconnect with a growing, jittered pause when
//! the broker goes away. It never decides what a push means, and never gives up: a box's timers
//! cover whatever is missed while the broker is down.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub host: String,
    pub port: u16,
    /// A topic filter, e.g. "rsync/upstream.example.net/#".
    pub filter: String,
    /// Names this client at the broker (the process id is appended).
    pub client: String,
}

/// Runs forever, calling `on_topic` with the topic of each message received.
pub async fn listen(sub: Subscription, mut on_topic: impl FnMut(&str)) {
    let id = format!("{}-{}", sub.client, std::process::id());
    let mut options = MqttOptions::new(id, sub.host.clone(), sub.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 16);
    let broker = format!("{}:{}", sub.host, sub.port);
    let mut failures: u32 = 0;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                tracing::info!(%broker, topic = %sub.filter, "push: connected");
                if let Err(e) = client.subscribe(sub.filter.clone(), QoS::AtLeastOnce).await {
                    tracing::warn!(error = %e, "push: subscribe failed");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => on_topic(&p.topic),
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                let wait = reconnect_pause(failures);
                tracing::warn!(error = %e, retry_in = ?wait, "push: broker connection lost; the timers cover what is missed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// 1 s after the first failure, doubling to a minute, each ±25 % so a fleet does not reconnect
/// in step when its broker comes back.
pub fn reconnect_pause(failures: u32) -> Duration {
    let nominal = Duration::from_secs(1u64 << failures.saturating_sub(1).min(6));
    nominal.mul_f64(0.75 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_about_a_minute_and_jitter() {
        for (failures, nominal) in [(1u32, 1.0f64), (2, 2.0), (7, 64.0), (30, 64.0)] {
            let d = reconnect_pause(failures).as_secs_f64();
            assert!(d >= nominal * 0.75 && d <= nominal * 1.25, "{failures}: {d}");
        }
    }
}
