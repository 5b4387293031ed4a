//! The fleet's sync topology, derived from the profiles (never written by hand): for each
//! project and upstream, at most `upstream_fetchers` boxes fetch a change from the upstream;
//! every other box fetches the same state from a box of the fleet that already holds it. A
//! holder feeds `feeds` boxes per Gbit/s of its link (up to five Gbit/s count), all at once as
//! soon as it holds the change (each child starts then), so that share counts once, not once a
//! round. The holders grow geometrically (3, 15, 63 … after one, two, three rounds with the
//! defaults and 1 GbE boxes; a fleet whose fastest boxes fetch first needs fewer rounds) while
//! the upstream's load stays flat as boxes are added. Each box gets its sources in the order
//! it tries them: the box that feeds it, other boxes of earlier rounds, and the upstream last (a
//! box never depends on the fleet alone). Pure but for `fanout_in`, which reads
//! profiles/fleet.toml.

use serde::{Deserialize, Serialize};

/// The fleet's fan-out (`profiles/fleet.toml`, `[sync]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Fanout {
    /// Boxes that fetch a change of a project from the upstream.
    #[serde(default = "three")]
    pub upstream_fetchers: usize,
    /// Boxes a holder feeds per Gbit/s of its link (`link_factor`), all at once: 4 × 200 Mbit/s
    /// (the fleet's per-project rate) leaves a 1 GbE box a fifth of its link for its clients
    /// while a push spreads.
    #[serde(default = "four")]
    pub feeds: usize,
}

/// A box carrying a project, with its link's speed (the hardware class's `link_mbit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carrier {
    pub site: String,
    pub link_mbit: u32,
}

impl Carrier {
    /// The box a profile describes, with its hardware class's link.
    pub fn of(site: &crate::profile::Site) -> Carrier {
        Carrier { site: site.name.clone(), link_mbit: site.link_mbit() }
    }

    /// A box with the fleet's usual 1 Gbit/s port.
    pub fn gigabit(site: &str) -> Carrier {
        Carrier { site: site.to_string(), link_mbit: crate::hardware::DEFAULT_LINK_MBIT }
    }
}

/// Gbit/s of a box's link that count for feeding the fleet and for its rsync daemon's
/// connections: 1 to 5. A 10 GbE box feeds five times a 1 GbE box's share, not ten: its
/// clients keep most of the link, and each rsync connection is a process with the file list
/// in memory.
pub fn link_factor(link_mbit: u32) -> usize {
    (link_mbit / 1000).clamp(1, 5) as usize
}

/// Public rsync connections a box's daemon takes per `link_factor`: 20 on a 1 GbE box, as the
/// playbook's rsyncd has; a holder's children of one push come on top of its clients.
pub const RSYNC_CONNECTIONS_PER_GBIT: usize = 20;

/// The rsync daemon's `max connections` for a box with this link.
pub fn rsync_connections(link_mbit: u32) -> usize {
    RSYNC_CONNECTIONS_PER_GBIT * link_factor(link_mbit)
}

/// Boxes a holder with this link feeds, all at once.
pub fn feeds_of(link_mbit: u32, fanout: Fanout) -> usize {
    fanout.feeds.max(1) * link_factor(link_mbit)
}

fn three() -> usize {
    3
}

fn four() -> usize {
    4
}

impl Default for Fanout {
    fn default() -> Fanout {
        Fanout { upstream_fetchers: 3, feeds: 4 }
    }
}

/// The fan-out `profiles/fleet.toml` sets (`[sync]`), or the defaults without the file.
pub fn fanout_in(profiles: &std::path::Path) -> Result<Fanout, String> {
    #[derive(Deserialize)]
    struct FleetFile {
        #[serde(default)]
        sync: Option<Fanout>,
    }
    let path = profiles.join("fleet.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Fanout::default());
    };
    let file: FleetFile = toml_edit::de::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file.sync.unwrap_or_default())
}

/// Where a box fetches a project from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Source {
    Upstream,
    /// Another box, by site name.
    Peer(String),
}

/// One box's place in a project's topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feed {
    pub site: String,
    pub link_mbit: u32,
    /// 1 for the boxes that fetch from the upstream, 2 for those they feed, …
    pub round: u32,
    /// In the order the box tries them; the upstream always last.
    pub sources: Vec<Source>,
}

/// How many other boxes of earlier rounds a box may fall back to before the upstream.
const ALTERNATES: usize = 2;

/// The topology of one project among `carriers` (the boxes carrying it from the same
/// upstream). The order of the boxes is rotated by the project's name, so the upstream fetchers
/// differ from project to project and no box carries every first round; then the fastest links
/// go first, since a box of an early round feeds the most. Each round hands the boxes left to
/// the holders that still have room, one each in turn, until every one feeds its share; the
/// boxes it handed out are the next round's holders.
pub fn plan(project: &str, carriers: &[Carrier], fanout: Fanout) -> Vec<Feed> {
    let mut order: Vec<Carrier> = carriers.to_vec();
    order.sort_by(|a, b| a.site.cmp(&b.site));
    order.dedup_by(|a, b| a.site == b.site);
    if order.is_empty() {
        return Vec::new();
    }
    let turn = project.bytes().map(usize::from).sum::<usize>() % order.len();
    order.rotate_left(turn);
    order.sort_by_key(|c| std::cmp::Reverse(link_factor(c.link_mbit)));
    let fetchers = fanout.upstream_fetchers.max(1).min(order.len());
    let mut feeds: Vec<Feed> = order[..fetchers]
        .iter()
        .map(|c| Feed { site: c.site.clone(), link_mbit: c.link_mbit, round: 1, sources: vec![Source::Upstream] })
        .collect();
    // What each holder may still feed: its children all start once it holds the change, so
    // its share counts once, not once a round.
    let mut left: Vec<usize> = feeds.iter().map(|f| feeds_of(f.link_mbit, fanout)).collect();
    let mut rest = order[fetchers..].iter().peekable();
    let mut round = 1;
    while rest.peek().is_some() {
        round += 1;
        let earlier: Vec<String> = feeds.iter().map(|f| f.site.clone()).collect();
        let holders: Vec<usize> = (0..feeds.len()).filter(|&h| left[h] > 0).collect();
        if holders.is_empty() {
            break; // cannot happen: every box of the last round may feed at least one
        }
        'turns: loop {
            let mut handed = false;
            for &h in &holders {
                if left[h] == 0 {
                    continue;
                }
                let Some(child) = rest.next() else { break 'turns };
                left[h] -= 1;
                handed = true;
                let parent = earlier[h].clone();
                let alternates = earlier.iter().cycle().skip(h + 1).take(earlier.len() - 1).take(ALTERNATES);
                let mut sources = vec![Source::Peer(parent)];
                sources.extend(alternates.map(|a| Source::Peer(a.clone())));
                sources.push(Source::Upstream);
                feeds.push(Feed { site: child.site.clone(), link_mbit: child.link_mbit, round, sources });
                left.push(feeds_of(child.link_mbit, fanout));
            }
            if !handed {
                break;
            }
        }
    }
    feeds
}

/// The peers `site` fetches each of its projects from before the upstream, in order, from the
/// fleet's `carriers` (project → sites carrying it from the same upstream): what the box's
/// `sync-peers.json` holds. A project only it carries, or that it fetches from the upstream,
/// has none.
pub fn peers_of(
    site: &str,
    carriers: &std::collections::BTreeMap<String, Vec<Carrier>>,
    fanout: Fanout,
) -> std::collections::BTreeMap<String, Vec<String>> {
    carriers
        .iter()
        .filter_map(|(project, sites)| {
            let feed = plan(project, sites, fanout).into_iter().find(|f| f.site == site)?;
            let peers: Vec<String> = feed
                .sources
                .into_iter()
                .filter_map(|s| match s {
                    Source::Peer(p) => Some(p),
                    Source::Upstream => None,
                })
                .collect();
            (!peers.is_empty()).then(|| (project.clone(), peers))
        })
        .collect()
}

/// The topology as an operator reads it: one line a box.
pub fn render(project: &str, feeds: &[Feed]) -> String {
    let boxes = if feeds.len() == 1 { "box" } else { "boxes" };
    let mut out = format!("{project}: {} {boxes}, {} from the upstream\n", feeds.len(), upstream_fetchers(feeds));
    for f in feeds {
        let sources: Vec<String> = f
            .sources
            .iter()
            .map(|s| match s {
                Source::Upstream => "upstream".to_string(),
                Source::Peer(p) => p.clone(),
            })
            .collect();
        let link = format!("{} Gbit/s", f.link_mbit as f64 / 1000.0);
        out.push_str(&format!("  round {}  {:<16} {link:>9}  from {}\n", f.round, f.site, sources.join(", then ")));
    }
    out
}

fn upstream_fetchers(feeds: &[Feed]) -> usize {
    feeds.iter().filter(|f| f.sources.first() == Some(&Source::Upstream)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(n: usize) -> Vec<Carrier> {
        (0..n).map(|i| Carrier::gigabit(&format!("site{i:02}"))).collect()
    }

    #[test]
    fn the_upstream_serves_k_boxes_whatever_the_fleet_size_and_the_rounds_grow_geometrically() {
        for n in [1, 2, 6, 20, 44, 200] {
            let feeds = plan("fedora", &sites(n), Fanout::default());
            assert_eq!(feeds.len(), n, "every box has its place");
            assert_eq!(upstream_fetchers(&feeds), n.min(3), "{n} boxes");
            let rounds = feeds.iter().map(|f| f.round).max().unwrap();
            // Holders after round r: 4^r - 1 with 3 fetchers and each box feeding 4 (3, 15, 63).
            let expected = (1..).find(|r| 4usize.pow(*r) > n).unwrap();
            assert_eq!(rounds, expected, "{n} boxes");
        }
    }

    #[test]
    fn each_box_is_fed_by_an_earlier_round_no_holder_feeds_more_than_its_share_and_the_upstream_comes_last() {
        let feeds = plan("archlinux", &sites(44), Fanout::default());
        let round_of = |s: &str| feeds.iter().find(|f| f.site == s).unwrap().round;
        for f in &feeds {
            assert_eq!(f.sources.last(), Some(&Source::Upstream), "{f:?}");
            for s in &f.sources[..f.sources.len() - 1] {
                let Source::Peer(p) = s else { panic!("the upstream only last: {f:?}") };
                assert!(round_of(p) < f.round, "{} (round {}) from {p} (round {})", f.site, f.round, round_of(p));
                assert_ne!(p, &f.site);
            }
        }
        // A holder's children all start once it holds the change: its share counts over every
        // round, never once a round.
        let mut fed: std::collections::BTreeMap<&str, usize> = Default::default();
        for f in feeds.iter().filter(|f| f.round > 1) {
            let Source::Peer(p) = &f.sources[0] else { panic!() };
            *fed.entry(p.as_str()).or_default() += 1;
        }
        assert!(fed.values().all(|&n| n <= 4), "{fed:?}");
        let first: Vec<&str> = feeds.iter().filter(|f| f.round == 1).map(|f| f.site.as_str()).collect();
        assert!(first.iter().all(|s| fed.get(s) == Some(&4)), "the first round feeds its whole share: {fed:?}");
    }

    #[test]
    fn a_box_knows_its_peers_per_project_and_an_upstream_fetcher_has_none() {
        let mut carriers = std::collections::BTreeMap::new();
        carriers.insert("fedora".to_string(), sites(6));
        carriers.insert("kde".to_string(), vec![Carrier::gigabit("site00")]);
        let feeds = plan("fedora", &sites(6), Fanout::default());
        let (first, later) = (&feeds[0].site, &feeds[5]);
        assert!(peers_of(first, &carriers, Fanout::default()).is_empty(), "{first} fetches from the upstream");
        let peers = peers_of(&later.site, &carriers, Fanout::default());
        let wanted: Vec<String> =
            later.sources.iter().filter_map(|s| if let Source::Peer(p) = s { Some(p.clone()) } else { None }).collect();
        assert_eq!(peers.get("fedora"), Some(&wanted));
        assert!(!peers.contains_key("kde"));
    }

    #[test]
    fn the_upstream_fetchers_differ_between_projects_and_the_order_is_stable() {
        let first = |p: &str| -> Vec<String> {
            plan(p, &sites(20), Fanout::default()).into_iter().filter(|f| f.round == 1).map(|f| f.site).collect()
        };
        assert_ne!(first("fedora"), first("archlinux"));
        let mut shuffled = sites(20);
        shuffled.reverse();
        assert_eq!(plan("fedora", &shuffled, Fanout::default()), plan("fedora", &sites(20), Fanout::default()));
        let text = render("fedora", &plan("fedora", &sites(5), Fanout::default()));
        assert!(text.starts_with("fedora: 5 boxes, 3 from the upstream"), "{text}");
        assert!(text.contains("round 2") && text.contains(", then upstream"), "{text}");
    }

    #[test]
    fn the_fastest_links_fetch_first_and_feed_more_so_a_fleet_with_a_few_needs_fewer_rounds() {
        let mut fleet = sites(41);
        for name in ["big1", "big2", "big3"] {
            fleet.push(Carrier { site: name.to_string(), link_mbit: 10_000 });
        }
        let feeds = plan("fedora", &fleet, Fanout::default());
        assert_eq!(feeds.len(), 44);
        let first: Vec<&str> = feeds.iter().filter(|f| f.round == 1).map(|f| f.site.as_str()).collect();
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|s| s.starts_with("big")), "the 10 GbE boxes fetch from the upstream: {first:?}");
        assert_eq!(feeds.iter().map(|f| f.round).max(), Some(2), "3 holders feeding 20 each cover 41 boxes");
        let mut fed: std::collections::BTreeMap<&str, usize> = Default::default();
        for f in feeds.iter().filter(|f| f.round == 2) {
            let Source::Peer(p) = &f.sources[0] else { panic!("{f:?}") };
            *fed.entry(p.as_str()).or_default() += 1;
        }
        // Handed in turn: the three share the round evenly, none beyond its 20.
        assert_eq!(fed.values().copied().collect::<Vec<_>>(), [14, 14, 13], "{fed:?}");
        // All 1 GbE, the same fleet needs three rounds; a 1 GbE holder feeds four.
        let slow = plan("fedora", &sites(44), Fanout::default());
        assert_eq!(slow.iter().map(|f| f.round).max(), Some(3));
        assert_eq!((feeds_of(1000, Fanout::default()), feeds_of(10_000, Fanout::default())), (4, 20));
        assert_eq!((feeds_of(100, Fanout::default()), feeds_of(20_000, Fanout::default())), (4, 20));
        assert_eq!((rsync_connections(1000), rsync_connections(10_000)), (20, 100));
        let text = render("fedora", &feeds);
        assert!(text.contains("10 Gbit/s  from upstream"), "{text}");
    }
}
