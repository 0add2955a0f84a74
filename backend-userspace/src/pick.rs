//! Schedulers: which endpoint a new connection goes to. Pure: no I/O, no clock, no global
//! randomness (callers pass a random number and the time), so every choice is testable.
//!
//! A [`Picker`] is built for one endpoint list and keeps the scheduler's state (round-robin
//! position, smooth-weighted-round-robin credits, the Maglev lookup table). Each pick sees a
//! [`Slot`] per endpoint, in the same order: its weight, active connections, and whether it may
//! take this connection (not ejected, not already tried, weight above zero).
//!
//! Names and semantics follow IPVS (`net/netfilter/ipvs/ip_vs_*.c`): `rr`, `wrr`, `lc`, `wlc`,
//! `sed`, `nq`, `sh`, `dh`, `mh`, plus `random` (what iptables' statistic match does).
//! [`AffinityMap`] adds client-IP stickiness over any of them.
//!
//! ```
//! use backend_userspace::pick::{Picker, PickInput, Slot};
//! use proxy_core::table::Scheduler;
//!
//! let names = ["198.18.1.1:80", "198.18.1.2:80"];
//! let weights = [1, 1];
//! let mut picker = Picker::new(Scheduler::RoundRobin, &names, &weights, 251);
//! let slots = [Slot::ready(1), Slot::ready(1)];
//! let input = PickInput { client: "127.0.0.1".parse().unwrap(), dest: "127.0.0.2".parse().unwrap(), random: 0 };
//! assert_eq!(picker.pick(&slots, &input), Some(0));
//! assert_eq!(picker.pick(&slots, &input), Some(1));
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proxy_core::table::Scheduler;

mod maglev;

pub use maglev::MaglevTable;

/// One endpoint as seen by a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The endpoint's weight (0 takes no new connections).
    pub weight: u32,
    /// Connections open to it now.
    pub active: usize,
    /// Whether it may take this connection (healthy, not tried yet).
    pub eligible: bool,
}

impl Slot {
    /// An eligible endpoint with no connections.
    pub fn ready(weight: u32) -> Self {
        Self {
            weight,
            active: 0,
            eligible: true,
        }
    }

    fn usable(&self) -> bool {
        self.eligible && self.weight > 0
    }
}

/// What a pick may depend on besides the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickInput {
    /// The client's address (`sh`, `mh`).
    pub client: IpAddr,
    /// The address the client connected to (`dh`).
    pub dest: IpAddr,
    /// A random number (`random`).
    pub random: u64,
}

/// A scheduler with its state, for one endpoint list.
#[derive(Debug, Clone)]
pub enum Picker {
    /// `rr`: each usable endpoint in turn.
    RoundRobin {
        /// The index to try first.
        next: usize,
    },
    /// `wrr`: smooth weighted round robin (nginx's): every endpoint gains its weight in credit,
    /// the richest is picked and pays the total, so picks interleave in proportion to weights.
    WeightedRoundRobin {
        /// Credit per endpoint.
        credit: Vec<i64>,
    },
    /// `lc`: fewest active connections; ties broken in turn.
    LeastConnection {
        /// Where the tie-breaking scan starts.
        next: usize,
    },
    /// `wlc`: fewest active connections per unit of weight.
    WeightedLeastConnection {
        /// Where the tie-breaking scan starts.
        next: usize,
    },
    /// `sed`: shortest expected delay, `(active + 1) / weight`.
    ShortestExpectedDelay {
        /// Where the tie-breaking scan starts.
        next: usize,
    },
    /// `nq`: an idle endpoint if there is one, else as `sed`.
    NeverQueue {
        /// Where the tie-breaking scan starts.
        next: usize,
    },
    /// `random`: weighted random.
    Random,
    /// `sh`: the client address picks the endpoint (rendezvous hashing, so an endpoint that is
    /// not usable moves only its own clients).
    SourceHash {
        /// A hash of each endpoint's name.
        keys: Vec<u64>,
    },
    /// `dh`: as `sh`, on the address the client connected to.
    DestinationHash {
        /// A hash of each endpoint's name.
        keys: Vec<u64>,
    },
    /// `mh`: Maglev consistent hashing.
    Maglev(MaglevTable),
}

impl Picker {
    /// A picker for endpoints named `names` (their stable identity, such as `addr:port`, which the
    /// hashing schedulers hash) with `weights`, in the order later slots use.
    /// `maglev_table_size` must be a prime (checked by [`crate::UserspaceConfig::validate`]).
    pub fn new(
        scheduler: Scheduler,
        names: &[impl AsRef<[u8]>],
        weights: &[u32],
        maglev_table_size: usize,
    ) -> Picker {
        let keys = || names.iter().map(|n| hash64(n.as_ref(), 0)).collect();
        match scheduler {
            Scheduler::RoundRobin => Picker::RoundRobin { next: 0 },
            Scheduler::WeightedRoundRobin => Picker::WeightedRoundRobin {
                credit: vec![0; names.len()],
            },
            Scheduler::LeastConnection => Picker::LeastConnection { next: 0 },
            Scheduler::WeightedLeastConnection => Picker::WeightedLeastConnection { next: 0 },
            Scheduler::ShortestExpectedDelay => Picker::ShortestExpectedDelay { next: 0 },
            Scheduler::NeverQueue => Picker::NeverQueue { next: 0 },
            Scheduler::Random => Picker::Random,
            Scheduler::SourceHash => Picker::SourceHash { keys: keys() },
            Scheduler::DestinationHash => Picker::DestinationHash { keys: keys() },
            Scheduler::Maglev => {
                Picker::Maglev(MaglevTable::new(names, weights, maglev_table_size))
            }
        }
    }

    /// The index of the endpoint the next connection goes to, or `None` when no slot is usable.
    /// `slots` must be in the order the picker was built with.
    pub fn pick(&mut self, slots: &[Slot], input: &PickInput) -> Option<usize> {
        match self {
            Picker::RoundRobin { next } => {
                let chosen = scan(slots, *next).find(|&i| slots[i].usable())?;
                *next = chosen + 1;
                Some(chosen)
            }
            Picker::WeightedRoundRobin { credit } => smooth_weighted(credit, slots),
            Picker::LeastConnection { next } => least_by(slots, next, |s| (s.active as u128, 1)),
            Picker::WeightedLeastConnection { next } => {
                least_by(slots, next, |s| (s.active as u128, u128::from(s.weight)))
            }
            Picker::ShortestExpectedDelay { next } => least_by(slots, next, |s| {
                (s.active as u128 + 1, u128::from(s.weight))
            }),
            Picker::NeverQueue { next } => {
                if let Some(idle) =
                    scan(slots, *next).find(|&i| slots[i].usable() && slots[i].active == 0)
                {
                    *next = idle + 1;
                    return Some(idle);
                }
                least_by(slots, next, |s| {
                    (s.active as u128 + 1, u128::from(s.weight))
                })
            }
            Picker::Random => weighted_random(slots, input.random),
            Picker::SourceHash { keys } => rendezvous(keys, slots, input.client),
            Picker::DestinationHash { keys } => rendezvous(keys, slots, input.dest),
            Picker::Maglev(table) => table.pick(slots, input.client),
        }
    }
}

/// Indices `0..len` starting at `start` (wrapping).
fn scan(slots: &[Slot], start: usize) -> impl Iterator<Item = usize> {
    let len = slots.len();
    let start = if len == 0 { 0 } else { start % len };
    (0..len).map(move |k| (start + k) % len)
}

fn smooth_weighted(credit: &mut [i64], slots: &[Slot]) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, slot) in slots.iter().enumerate() {
        if !slot.usable() || i >= credit.len() {
            continue;
        }
        let weight = i64::from(slot.weight);
        credit[i] += weight;
        total += weight;
        if best.is_none_or(|b| credit[i] > credit[b]) {
            best = Some(i);
        }
    }
    let best = best?;
    credit[best] -= total;
    Some(best)
}

/// The usable slot with the least `num / den` (compared by cross-multiplying), scanning from
/// `next` so that ties rotate.
fn least_by(
    slots: &[Slot],
    next: &mut usize,
    ratio: impl Fn(&Slot) -> (u128, u128),
) -> Option<usize> {
    let mut best: Option<(usize, (u128, u128))> = None;
    for i in scan(slots, *next) {
        let slot = &slots[i];
        if !slot.usable() {
            continue;
        }
        let (num, den) = ratio(slot);
        let better = match best {
            None => true,
            Some((_, (bnum, bden))) => num * bden < bnum * den,
        };
        if better {
            best = Some((i, (num, den)));
        }
    }
    let (chosen, _) = best?;
    *next = chosen + 1;
    Some(chosen)
}

fn weighted_random(slots: &[Slot], random: u64) -> Option<usize> {
    let total: u64 = slots
        .iter()
        .filter(|s| s.usable())
        .map(|s| u64::from(s.weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for (i, slot) in slots.iter().enumerate() {
        if !slot.usable() {
            continue;
        }
        let weight = u64::from(slot.weight);
        if point < weight {
            return Some(i);
        }
        point -= weight;
    }
    None
}

/// Highest-random-weight hashing: every (key, endpoint) pair gets a score, the usable endpoint
/// with the highest wins. When an endpoint becomes unusable only its own keys move.
pub(super) fn rendezvous(keys: &[u64], slots: &[Slot], key: IpAddr) -> Option<usize> {
    let key = hash_ip(key, 1);
    slots
        .iter()
        .enumerate()
        .filter(|(i, s)| s.usable() && *i < keys.len())
        .max_by_key(|(i, _)| mix64(key ^ keys[*i]))
        .map(|(i, _)| i)
}

/// FNV-1a, finished with splitmix64's mixer: stable across runs and platforms.
pub(crate) fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ mix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

pub(super) fn hash_ip(ip: IpAddr, seed: u64) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash64(&v4.octets(), seed),
        IpAddr::V6(v6) => hash64(&v6.octets(), seed),
    }
}

/// splitmix64's output function.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Client-IP session affinity: which endpoint each client was last sent to, and when. An entry
/// older than the timeout is gone (kube-proxy: `-m recent --rcheck --seconds T`, refreshed by
/// every new connection).
#[derive(Debug, Clone)]
pub struct AffinityMap {
    timeout: Duration,
    entries: HashMap<IpAddr, (SocketAddr, Instant)>,
    /// When the map was last swept of expired entries.
    swept: Option<Instant>,
}

impl AffinityMap {
    /// An empty map whose entries live for `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            entries: HashMap::new(),
            swept: None,
        }
    }

    /// Changes the timeout; existing entries are judged by the new one.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The endpoint `client` is pinned to at `now`, if its entry has not expired.
    pub fn get(&mut self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        let &(endpoint, seen) = self.entries.get(&client)?;
        if now.saturating_duration_since(seen) < self.timeout {
            Some(endpoint)
        } else {
            self.entries.remove(&client);
            None
        }
    }

    /// Pins `client` to `endpoint` from `now` on. Expired entries are swept at most once per
    /// timeout, so the map stays bounded by the clients seen within about two timeouts.
    pub fn set(&mut self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        if self
            .swept
            .is_none_or(|swept| now.saturating_duration_since(swept) >= self.timeout)
        {
            let timeout = self.timeout;
            self.entries
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < timeout);
            self.swept = Some(now);
        }
        self.entries.insert(client, (endpoint, now));
    }

    /// Number of entries (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(client: u8, random: u64) -> PickInput {
        PickInput {
            client: IpAddr::from([127, 0, 0, client]),
            dest: IpAddr::from([127, 0, 0, 1]),
            random,
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("198.18.1.{i}:8080")).collect()
    }

    fn counts(picker: &mut Picker, slots: &[Slot], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; slots.len()];
        for k in 0..picks {
            let i = picker
                .pick(slots, &input((k % 250) as u8, mix64(k as u64)))
                .expect("usable slots");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_cycles_and_skips_ineligible() {
        let mut p = Picker::new(Scheduler::RoundRobin, &names(3), &[1, 1, 1], 251);
        let mut slots = [Slot::ready(1); 3];
        let seq: Vec<_> = (0..6).map(|_| p.pick(&slots, &input(1, 0))).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2].map(Some));
        slots[1].eligible = false;
        let seq: Vec<_> = (0..4).map(|_| p.pick(&slots, &input(1, 0))).collect();
        assert_eq!(seq, [0, 2, 0, 2].map(Some));
        slots = [Slot {
            eligible: false,
            ..Slot::ready(1)
        }; 3];
        assert_eq!(p.pick(&slots, &input(1, 0)), None);
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_proportional() {
        let mut p = Picker::new(Scheduler::WeightedRoundRobin, &names(3), &[5, 1, 1], 251);
        let slots = [Slot::ready(5), Slot::ready(1), Slot::ready(1)];
        let seq: Vec<_> = (0..7)
            .map(|_| p.pick(&slots, &input(1, 0)).expect("usable"))
            .collect();
        // nginx's smooth WRR for {a:5, b:1, c:1}: a a b a c a a.
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&mut p, &slots, 700), [500, 100, 100]);
    }

    #[test]
    fn zero_weight_takes_no_connections() {
        for scheduler in Scheduler::ALL {
            let mut p = Picker::new(scheduler, &names(2), &[0, 1], 251);
            let slots = [Slot::ready(0), Slot::ready(1)];
            assert_eq!(counts(&mut p, &slots, 50), [0, 50], "{scheduler}");
        }
    }

    #[test]
    fn least_connection_picks_the_idlest_and_rotates_ties() {
        let mut p = Picker::new(Scheduler::LeastConnection, &names(3), &[1, 1, 1], 251);
        let mut slots = [Slot::ready(1); 3];
        slots[0].active = 4;
        slots[1].active = 2;
        slots[2].active = 3;
        assert_eq!(p.pick(&slots, &input(1, 0)), Some(1));
        let idle = [Slot::ready(1); 3];
        let seq: Vec<_> = (0..3)
            .map(|_| p.pick(&idle, &input(1, 0)).expect("usable"))
            .collect();
        let mut sorted = seq.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "ties rotate: {seq:?}");
    }

    #[test]
    fn weighted_least_connection_and_sed_use_weights() {
        let mut slots = [Slot::ready(4), Slot::ready(1)];
        slots[0].active = 3;
        slots[1].active = 1;
        // wlc: 3/4 < 1/1; sed: 4/4 < 2/1.
        let mut wlc = Picker::new(Scheduler::WeightedLeastConnection, &names(2), &[4, 1], 251);
        assert_eq!(wlc.pick(&slots, &input(1, 0)), Some(0));
        let mut sed = Picker::new(Scheduler::ShortestExpectedDelay, &names(2), &[4, 1], 251);
        assert_eq!(sed.pick(&slots, &input(1, 0)), Some(0));
        slots[1].active = 0;
        let mut nq = Picker::new(Scheduler::NeverQueue, &names(2), &[4, 1], 251);
        assert_eq!(
            nq.pick(&slots, &input(1, 0)),
            Some(1),
            "nq prefers an idle endpoint"
        );
    }

    #[test]
    fn random_respects_weights_within_bounds() {
        let mut p = Picker::new(Scheduler::Random, &names(2), &[3, 1], 251);
        let slots = [Slot::ready(3), Slot::ready(1)];
        let c = counts(&mut p, &slots, 4000);
        // Expect 3000/1000; binomial sd ≈ 27, allow 5 sd.
        assert!((2860..=3140).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn source_hash_is_sticky_per_client_and_moves_only_lost_clients() {
        let mut p = Picker::new(Scheduler::SourceHash, &names(4), &[1; 4], 251);
        let mut slots = [Slot::ready(1); 4];
        let before: Vec<_> = (0..200)
            .map(|c| p.pick(&slots, &input(c, 0)).expect("usable"))
            .collect();
        let again: Vec<_> = (0..200)
            .map(|c| p.pick(&slots, &input(c, 9)).expect("usable"))
            .collect();
        assert_eq!(before, again, "same client, same endpoint");
        let used: std::collections::BTreeSet<_> = before.iter().collect();
        assert_eq!(used.len(), 4, "clients spread over all endpoints");
        slots[2].eligible = false;
        for c in 0..200u8 {
            let now = p.pick(&slots, &input(c, 0)).expect("usable");
            if before[c as usize] != 2 {
                assert_eq!(now, before[c as usize], "client {c} moved needlessly");
            } else {
                assert_ne!(now, 2);
            }
        }
    }

    #[test]
    fn maglev_pick_follows_the_table_and_falls_back() {
        let mut p = Picker::new(Scheduler::Maglev, &names(3), &[1; 3], 251);
        let mut slots = [Slot::ready(1); 3];
        let first = p.pick(&slots, &input(7, 0)).expect("usable");
        assert_eq!(
            p.pick(&slots, &input(7, 123)),
            Some(first),
            "deterministic per client"
        );
        slots[first].eligible = false;
        let next = p.pick(&slots, &input(7, 0)).expect("usable");
        assert_ne!(next, first);
    }

    #[test]
    fn affinity_sticks_until_timeout_then_expires() {
        let start = Instant::now();
        let mut map = AffinityMap::new(Duration::from_secs(10));
        let client = IpAddr::from([127, 0, 0, 9]);
        let ep: SocketAddr = "198.18.1.1:80".parse().expect("addr");
        map.set(client, ep, start);
        assert_eq!(map.get(client, start + Duration::from_secs(9)), Some(ep));
        assert_eq!(map.get(client, start + Duration::from_secs(10)), None);
        assert!(map.is_empty(), "expired entry removed on lookup");
    }

    #[test]
    fn affinity_sweeps_expired_entries() {
        let start = Instant::now();
        let mut map = AffinityMap::new(Duration::from_secs(1));
        let ep: SocketAddr = "198.18.1.1:80".parse().expect("addr");
        for c in 0..100u8 {
            map.set(IpAddr::from([127, 0, 1, c]), ep, start);
        }
        map.set(
            IpAddr::from([127, 0, 2, 1]),
            ep,
            start + Duration::from_secs(2),
        );
        assert_eq!(map.len(), 1);
    }
}
