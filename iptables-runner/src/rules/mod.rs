//! The typed model of the rules we write, shared by every backend that writes iptables rules
//! (the iptables backend's chains, the IPVS backend's companion rules): [`Table`] → [`Chain`] →
//! [`Rule`] (base matches, [`Match`]es, ipset [`SetMatch`]es, one [`Target`]). `Display` writes
//! exact `iptables-restore` syntax and does all quoting; [`parse_restore`] reads *our* rule shapes
//! back (for the tracer, the round-trip property test, `observe` and the hook checks). A shape we
//! do not emit is an error, never silently skipped, as kube-proxy's
//! `pkg/util/iptables/testing/parse.go` and `pkg/proxy/nftables/helpers_test.go` do.
//!
//! Rules are written in `iptables-save`'s own order (`-s`, `-d`, `-p`, then `-m` modules in rule
//! order, then `-j`), with host addresses as `/32` or `/128` and marks as `--set-xmark value/mask`
//! (`--or-mark X` is `X/X`, `--xor-mark X` is `X/0x0`), so that what `iptables-save` prints back
//! compares equal to what we wrote.
//!
//! ```
//! use iptables_runner::rules::*;
//! use proxy_core::Protocol;
//!
//! let rule = Rule::new(Target::Jump(ChainName::new("SVCP-SVC-ABCDEFGHIJKLMNOP")))
//!     .destination("198.19.0.10".parse().unwrap())
//!     .protocol(Protocol::Tcp)
//!     .comment("default/web:http cluster IP")
//!     .dport(Protocol::Tcp, 80);
//! assert_eq!(
//!     rule.to_string(),
//!     "-d 198.19.0.10/32 -p tcp -m comment --comment \"default/web:http cluster IP\" \
//!      -m tcp --dport 80 -j SVCP-SVC-ABCDEFGHIJKLMNOP"
//! );
//! let parsed = parse_rule_spec(&rule.to_string()).unwrap();
//! assert_eq!(parsed, rule);
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use proxy_core::Protocol;

/// An address family: which of `iptables` / `ip6tables` a table belongs to (shared with the
/// conntrack client, which dumps per family).
pub use nf_conntrack::Family;

/// The iptables tables we write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableName {
    /// `*filter`.
    Filter,
    /// `*nat`.
    Nat,
}

impl TableName {
    /// The name as written after `*`.
    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Filter => "filter",
            TableName::Nat => "nat",
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chain's name, ours or built-in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainName(String);

impl ChainName {
    /// The built-in chains of the nat and filter tables.
    pub const BUILTINS: [&'static str; 5] =
        ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

    /// A chain name as given (no checks; each backend makes the names it creates under its own
    /// prefix).
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a built-in chain (`PREROUTING`...).
    pub fn is_builtin(&self) -> bool {
        Self::BUILTINS.contains(&self.0.as_str())
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address match (`-s`/`-d`), possibly negated (`! -s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrMatch {
    /// The network; a host is a `/32` or `/128`.
    pub net: IpNet,
    /// `!`: match everything outside `net`.
    pub negated: bool,
}

impl AddrMatch {
    /// Whether `addr` matches.
    pub fn matches(&self, addr: IpAddr) -> bool {
        let same_family = Family::of(addr) == Family::of(self.net.addr());
        // A rule never sees the other family's packets; a negated match of another family is moot.
        same_family && (self.net.contains(&addr) != self.negated)
    }
}

/// A probability as `%0.10f` prints it (kube-proxy's `probability()`): an integer number of 1e-10
/// units, so rendering and parsing round-trip exactly.
///
/// Equality (and hashing, ordering) is by the value the kernel stores, `lround(2^31 * p)`
/// (`xt_statistic`): `iptables-save` prints that back with 11 digits (`0.33333333349` for our
/// `0.3333333333`), and both must compare equal.
#[derive(Debug, Clone, Copy)]
pub struct Probability(u64);

impl PartialEq for Probability {
    fn eq(&self, other: &Self) -> bool {
        self.kernel() == other.kernel()
    }
}

impl Eq for Probability {}

impl std::hash::Hash for Probability {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kernel().hash(state);
    }
}

impl PartialOrd for Probability {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Probability {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.kernel().cmp(&other.kernel())
    }
}

impl Probability {
    const SCALE: u64 = 10_000_000_000;

    /// The kernel's fixed-point value: `lround(0x80000000 * p)`.
    pub fn kernel(self) -> u64 {
        let scale = u128::from(Self::SCALE);
        let v = (u128::from(self.0) * (1u128 << 31) + scale / 2) / scale;
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// `numerator / denominator`, rounded to 10 decimals as `%0.10f` would.
    ///
    /// # Panics
    /// Never: a zero denominator gives probability 1 (callers never pass one).
    pub fn ratio(numerator: u64, denominator: u64) -> Self {
        if denominator == 0 {
            return Self(Self::SCALE);
        }
        let scaled = (u128::from(numerator) * u128::from(Self::SCALE) * 2
            + u128::from(denominator))
            / (2 * u128::from(denominator));
        Self(
            u64::try_from(scaled)
                .unwrap_or(Self::SCALE)
                .min(Self::SCALE),
        )
    }

    /// As a float.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    /// Parses `%0.10f` (what we write) or `iptables-save`'s 11 digits, rounding to 10 decimals.
    fn parse(text: &str) -> Option<Self> {
        let (int, frac) = text.split_once('.')?;
        if frac.is_empty() || frac.len() > 18 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let int: u64 = int.parse().ok()?;
        let digits = u32::try_from(frac.len()).ok()?;
        let frac: u64 = frac.parse().ok()?;
        let scaled = if digits <= 10 {
            frac * 10u64.pow(10 - digits)
        } else {
            let div = 10u64.pow(digits - 10);
            (frac + div / 2) / div
        };
        let value = int.checked_mul(Self::SCALE)?.checked_add(scaled)?;
        (value <= Self::SCALE).then_some(Self(value))
    }
}

impl fmt::Display for Probability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:010}", self.0 / Self::SCALE, self.0 % Self::SCALE)
    }
}

/// `-m conntrack --ctstate` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    /// `NEW`.
    New,
    /// `RELATED`.
    Related,
    /// `ESTABLISHED`.
    Established,
    /// `INVALID`.
    Invalid,
}

impl CtState {
    fn as_str(self) -> &'static str {
        match self {
            CtState::New => "NEW",
            CtState::Related => "RELATED",
            CtState::Established => "ESTABLISHED",
            CtState::Invalid => "INVALID",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "NEW" => CtState::New,
            "RELATED" => CtState::Related,
            "ESTABLISHED" => CtState::Established,
            "INVALID" => CtState::Invalid,
            _ => return None,
        })
    }
}

/// Which address `-m addrtype` tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrTypeDir {
    /// `--src-type LOCAL`.
    Src,
    /// `--dst-type LOCAL`.
    Dst,
}

/// `-m recent`: the client-IP affinity lists (one per endpoint, named after its chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Recent {
    /// `--rcheck --seconds T --reap --name N --mask M --rsource`: the source was seen within T.
    Check {
        /// The list name.
        name: String,
        /// The affinity timeout.
        seconds: u32,
        /// The family, for the all-ones `--mask`.
        family: Family,
    },
    /// `--set --name N --mask M --rsource`: remember this source.
    Set {
        /// The list name.
        name: String,
        /// The family, for the all-ones `--mask`.
        family: Family,
    },
}

fn full_mask(family: Family) -> &'static str {
    match family {
        Family::V4 => "255.255.255.255",
        Family::V6 => "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    }
}

/// A `-m` match module with its options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// `-m comment --comment "..."`: docs for operators reading `iptables-save`.
    Comment(String),
    /// `-m tcp --dport P` (or `udp`/`sctp`).
    DestPort {
        /// The protocol module.
        protocol: Protocol,
        /// The destination port.
        port: u16,
    },
    /// `-m tcp --dport FIRST:LAST` (or `udp`/`sctp`): the node-ports tree.
    DestPortRange {
        /// The protocol module.
        protocol: Protocol,
        /// First port of the range.
        first: u16,
        /// Last port of the range (inclusive).
        last: u16,
    },
    /// `-m addrtype --src-type LOCAL` / `--dst-type LOCAL`.
    AddrTypeLocal(AddrTypeDir),
    /// `-m statistic --mode random --probability p`.
    Statistic(Probability),
    /// `-m recent ...`.
    Recent(Recent),
    /// `-m mark [!] --mark value/mask`.
    Mark {
        /// Bits that must be set (under `mask`).
        value: u32,
        /// Bits compared.
        mask: u32,
        /// `!`.
        negated: bool,
    },
    /// `-m conntrack --ctstate S[,S]`.
    Conntrack(Vec<CtState>),
}

/// One dimension of an ipset lookup: the packet's source or destination (address, or port for a
/// port dimension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetDir {
    /// `src`.
    Src,
    /// `dst`.
    Dst,
}

impl SetDir {
    fn as_str(self) -> &'static str {
        match self {
            SetDir::Src => "src",
            SetDir::Dst => "dst",
        }
    }
}

/// `-m set [!] --match-set NAME dst,dst,src`: whether the packet's fields, in the set's dimension
/// order (`hash:ip,port,ip`: destination address, destination port, source address), are in the
/// ipset `NAME` (kube-proxy's IPVS mode rules, `pkg/proxy/ipvs/proxier.go`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetMatch {
    /// The ipset's name.
    pub name: String,
    /// The packet field looked up for each dimension of the set, in order (1 to 6).
    pub dirs: Vec<SetDir>,
    /// `!`: the packet is *not* in the set.
    pub negated: bool,
}

impl SetMatch {
    /// The packet is in set `name`, its dimensions taken from `dirs`.
    pub fn new(name: impl Into<String>, dirs: &[SetDir]) -> Self {
        Self {
            name: name.into(),
            dirs: dirs.to_vec(),
            negated: false,
        }
    }

    /// The packet is not in set `name`.
    pub fn not(name: impl Into<String>, dirs: &[SetDir]) -> Self {
        Self {
            negated: true,
            ..Self::new(name, dirs)
        }
    }

    /// The dimension list as written after the set name: `dst,dst,src`.
    pub fn dirs_text(&self) -> String {
        let dirs: Vec<&str> = self.dirs.iter().map(|d| d.as_str()).collect();
        dirs.join(",")
    }
}

/// Why a REJECT rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectWith {
    /// `icmp-port-unreachable` (IPv4).
    IcmpPortUnreachable,
    /// `icmp6-port-unreachable` (IPv6).
    Icmp6PortUnreachable,
    /// `tcp-reset`.
    TcpReset,
}

impl RejectWith {
    fn as_str(self) -> &'static str {
        match self {
            RejectWith::IcmpPortUnreachable => "icmp-port-unreachable",
            RejectWith::Icmp6PortUnreachable => "icmp6-port-unreachable",
            RejectWith::TcpReset => "tcp-reset",
        }
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `-j CHAIN`: call, then continue here when it returns.
    Jump(ChainName),
    /// `-g CHAIN`: continue there; its end returns to our caller.
    Goto(ChainName),
    /// `-j RETURN`.
    Return,
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j REJECT --reject-with ...`.
    Reject(RejectWith),
    /// `-j DNAT --to-destination addr:port`.
    Dnat(SocketAddr),
    /// `-j MARK --set-xmark value/mask` (`--or-mark X` is `X/X`; clearing bits is `0x0/bits`).
    Mark {
        /// New value of the masked bits.
        value: u32,
        /// Bits changed.
        mask: u32,
    },
    /// `-j MASQUERADE [--random-fully]`.
    Masquerade {
        /// `--random-fully`.
        random_fully: bool,
    },
}

/// One rule: base matches, modules, a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `-s`.
    pub source: Option<AddrMatch>,
    /// `-d`.
    pub destination: Option<AddrMatch>,
    /// `-p`.
    pub protocol: Option<Protocol>,
    /// `-m` modules, in order.
    pub matches: Vec<Match>,
    /// `-m set` modules, in order, written after [`Rule::matches`] (our rules with set matches
    /// put them last).
    pub sets: Vec<SetMatch>,
    /// `-j`/`-g`.
    pub target: Target,
}

/// Comments longer than this are cut (the kernel's `XT_MAX_COMMENT_LEN` is 256 with the NUL).
pub const MAX_COMMENT_LEN: usize = 255;

/// Makes `text` safe inside `--comment "..."`: no quotes, backslashes or line breaks, at most
/// [`MAX_COMMENT_LEN`] bytes.
pub fn sanitize_comment(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\'' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    if out.len() > MAX_COMMENT_LEN {
        let mut cut = MAX_COMMENT_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn host(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}

// === impl Rule ===

impl Rule {
    /// A rule that always applies `target`.
    pub fn new(target: Target) -> Self {
        Self {
            source: None,
            destination: None,
            protocol: None,
            matches: Vec::new(),
            sets: Vec::new(),
            target,
        }
    }

    /// `-s addr` (a host).
    pub fn source(mut self, addr: IpAddr) -> Self {
        self.source = Some(AddrMatch {
            net: host(addr),
            negated: false,
        });
        self
    }

    /// `-s net` or `! -s net`.
    pub fn source_net(mut self, net: IpNet, negated: bool) -> Self {
        self.source = Some(AddrMatch { net, negated });
        self
    }

    /// `-d addr` (a host).
    pub fn destination(mut self, addr: IpAddr) -> Self {
        self.destination = Some(AddrMatch {
            net: host(addr),
            negated: false,
        });
        self
    }

    /// `-d net` or `! -d net`.
    pub fn destination_net(mut self, net: IpNet, negated: bool) -> Self {
        self.destination = Some(AddrMatch { net, negated });
        self
    }

    /// `-p proto`.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// `-m comment --comment "text"` (sanitized).
    pub fn comment(mut self, text: impl AsRef<str>) -> Self {
        self.matches
            .push(Match::Comment(sanitize_comment(text.as_ref())));
        self
    }

    /// `-m proto --dport port`.
    pub fn dport(mut self, protocol: Protocol, port: u16) -> Self {
        self.matches.push(Match::DestPort { protocol, port });
        self
    }

    /// Any other match module.
    pub fn with(mut self, m: Match) -> Self {
        self.matches.push(m);
        self
    }

    /// `-m set [!] --match-set NAME DIRS`, after the other modules.
    pub fn match_set(mut self, set: SetMatch) -> Self {
        self.sets.push(set);
        self
    }

    /// The rule's comment, if any.
    pub fn comment_text(&self) -> Option<&str> {
        self.matches.iter().find_map(|m| match m {
            Match::Comment(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// The chain this rule jumps or goes to, if any.
    pub fn target_chain(&self) -> Option<&ChainName> {
        match &self.target {
            Target::Jump(c) | Target::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// A piece of a rule spec: words as they are, or one argument that restore syntax quotes.
enum Chunk<'a> {
    /// Words separated by single spaces, none of them quoted.
    Words(fmt::Arguments<'a>),
    /// One argument, written in double quotes (a comment: [`sanitize_comment`] keeps quotes out).
    Quoted(&'a str),
}

impl Rule {
    /// Hands the rule spec to `emit`, piece by piece, in `iptables-save`'s order: the one place
    /// that knows the syntax, for both `Display` (restore input) and [`Rule::args`] (argv).
    fn chunks(&self, mut emit: impl FnMut(Chunk<'_>) -> fmt::Result) -> fmt::Result {
        use Chunk::Words;
        if let Some(s) = &self.source {
            let neg = if s.negated { "! " } else { "" };
            emit(Words(format_args!("{neg}-s {}", s.net)))?;
        }
        if let Some(d) = &self.destination {
            let neg = if d.negated { "! " } else { "" };
            emit(Words(format_args!("{neg}-d {}", d.net)))?;
        }
        if let Some(p) = self.protocol {
            emit(Words(format_args!("-p {p}")))?;
        }
        for m in &self.matches {
            match m {
                Match::Comment(c) => {
                    emit(Words(format_args!("-m comment --comment")))?;
                    emit(Chunk::Quoted(c))?;
                }
                Match::DestPort { protocol, port } => {
                    emit(Words(format_args!("-m {protocol} --dport {port}")))?;
                }
                Match::DestPortRange {
                    protocol,
                    first,
                    last,
                } => emit(Words(format_args!(
                    "-m {protocol} --dport {first}:{last}"
                )))?,
                Match::AddrTypeLocal(AddrTypeDir::Src) => {
                    emit(Words(format_args!("-m addrtype --src-type LOCAL")))?;
                }
                Match::AddrTypeLocal(AddrTypeDir::Dst) => {
                    emit(Words(format_args!("-m addrtype --dst-type LOCAL")))?;
                }
                Match::Statistic(p) => emit(Words(format_args!(
                    "-m statistic --mode random --probability {p}"
                )))?,
                Match::Recent(Recent::Check {
                    name,
                    seconds,
                    family,
                }) => emit(Words(format_args!(
                    "-m recent --rcheck --seconds {seconds} --reap --name {name} --mask {} --rsource",
                    full_mask(*family)
                )))?,
                Match::Recent(Recent::Set { name, family }) => emit(Words(format_args!(
                    "-m recent --set --name {name} --mask {} --rsource",
                    full_mask(*family)
                )))?,
                Match::Mark {
                    value,
                    mask,
                    negated,
                } => {
                    let neg = if *negated { "! " } else { "" };
                    emit(Words(format_args!(
                        "-m mark {neg}--mark {value:#x}/{mask:#x}"
                    )))?;
                }
                Match::Conntrack(states) => {
                    let list: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
                    emit(Words(format_args!(
                        "-m conntrack --ctstate {}",
                        list.join(",")
                    )))?;
                }
            }
        }
        for set in &self.sets {
            let neg = if set.negated { "! " } else { "" };
            emit(Words(format_args!(
                "-m set {neg}--match-set {} {}",
                set.name,
                set.dirs_text()
            )))?;
        }
        match &self.target {
            Target::Jump(c) => emit(Words(format_args!("-j {c}"))),
            Target::Goto(c) => emit(Words(format_args!("-g {c}"))),
            Target::Return => emit(Words(format_args!("-j RETURN"))),
            Target::Accept => emit(Words(format_args!("-j ACCEPT"))),
            Target::Drop => emit(Words(format_args!("-j DROP"))),
            Target::Reject(with) => emit(Words(format_args!(
                "-j REJECT --reject-with {}",
                with.as_str()
            ))),
            Target::Dnat(to) => emit(Words(format_args!("-j DNAT --to-destination {to}"))),
            Target::Mark { value, mask } => emit(Words(format_args!(
                "-j MARK --set-xmark {value:#x}/{mask:#x}"
            ))),
            Target::Masquerade { random_fully } => {
                if *random_fully {
                    emit(Words(format_args!("-j MASQUERADE --random-fully")))
                } else {
                    emit(Words(format_args!("-j MASQUERADE")))
                }
            }
        }
    }

    /// The rule spec as an argument vector, for a command line (`iptables -t nat -C PREROUTING
    /// <args>`): the words of `Display`, with the comment as one argument and without its
    /// quotes.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        // Infallible: pushing to a Vec.
        let _ = self.chunks(|chunk| {
            match chunk {
                Chunk::Words(words) => {
                    args.extend(words.to_string().split(' ').map(str::to_owned));
                }
                Chunk::Quoted(text) => args.push(text.to_owned()),
            }
            Ok(())
        });
        args
    }
}

impl fmt::Display for Rule {
    /// The rule spec as after `-A CHAIN ` in restore input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        self.chunks(|chunk| {
            f.write_str(sep)?;
            sep = " ";
            match chunk {
                Chunk::Words(words) => f.write_fmt(words),
                Chunk::Quoted(text) => write!(f, "\"{text}\""),
            }
        })
    }
}

/// A chain we declare, with its rules in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// The chain's name.
    pub name: ChainName,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

impl Chain {
    /// An empty chain.
    pub fn new(name: ChainName) -> Self {
        Self {
            name,
            rules: Vec::new(),
        }
    }

    /// Appends a rule.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }
}

/// A change to a chain we do not declare (a built-in one, which keeps everyone else's rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Edit {
    /// `-I CHAIN RULE`: the rule at the top of the chain.
    Insert {
        /// The built-in chain.
        chain: ChainName,
        /// The rule.
        rule: Rule,
    },
    /// `-D CHAIN RULE`: one copy of the rule deleted (the restore fails if there is none).
    Delete {
        /// The built-in chain.
        chain: ChainName,
        /// The rule.
        rule: Rule,
    },
}

impl fmt::Display for Edit {
    /// The restore line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edit::Insert { chain, rule } => write!(f, "-I {chain} {rule}"),
            Edit::Delete { chain, rule } => write!(f, "-D {chain} {rule}"),
        }
    }
}

/// One table's worth of restore input: chains to (re)write, edits of built-in chains, and chains
/// to delete.
///
/// Written with `--noflush`: each declared chain (`:NAME - [0:0]`) is created or flushed and gets
/// exactly the rules listed; chains not mentioned are left alone; the [`Edit`]s follow our rules
/// (a jump needs its target declared) and precede the deletions (a jump left in place would
/// forbid them); `-X NAME` (after its own `:NAME` line, which flushes it) deletes a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `nat` or `filter`.
    pub name: TableName,
    /// Chains to write, in output order.
    pub chains: Vec<Chain>,
    /// Rules inserted into or deleted from built-in chains, in order.
    pub edits: Vec<Edit>,
    /// Chains to flush and delete.
    pub deleted: Vec<ChainName>,
}

impl Table {
    /// An empty table.
    pub fn new(name: TableName) -> Self {
        Self {
            name,
            chains: Vec::new(),
            edits: Vec::new(),
            deleted: Vec::new(),
        }
    }

    /// Number of rules written.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    /// Whether there is nothing to write, edit or delete.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.edits.is_empty() && self.deleted.is_empty()
    }

    /// One chain by name.
    pub fn chain(&self, name: &ChainName) -> Option<&Chain> {
        self.chains.iter().find(|c| &c.name == name)
    }
}

impl fmt::Display for Table {
    /// `*table`, chain lines, rules, edits of built-in chains, deletions, `COMMIT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "*{}", self.name)?;
        for chain in &self.chains {
            writeln!(f, ":{} - [0:0]", chain.name)?;
        }
        for name in &self.deleted {
            writeln!(f, ":{name} - [0:0]")?;
        }
        for chain in &self.chains {
            for rule in &chain.rules {
                writeln!(f, "-A {} {rule}", chain.name)?;
            }
        }
        for edit in &self.edits {
            writeln!(f, "{edit}")?;
        }
        for name in &self.deleted {
            writeln!(f, "-X {name}")?;
        }
        writeln!(f, "COMMIT")
    }
}

mod parse;

pub use parse::{parse_restore, parse_rule_spec, parse_save, saved_copies, ParseError};

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    #[test]
    fn args_are_the_display_words_with_the_comment_as_one_argument() {
        let rule = Rule::new(Target::Jump(ChainName::new("SVCP-SERVICES")))
            .source_net("198.18.0.0/15".parse().expect("net"), true)
            .with(Match::Conntrack(vec![CtState::New]))
            .comment("service portals");
        assert_eq!(
            rule.to_string(),
            "! -s 198.18.0.0/15 -m conntrack --ctstate NEW \
             -m comment --comment \"service portals\" -j SVCP-SERVICES"
        );
        assert_eq!(
            rule.args(),
            [
                "!",
                "-s",
                "198.18.0.0/15",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "comment",
                "--comment",
                "service portals",
                "-j",
                "SVCP-SERVICES"
            ]
        );
    }

    #[test]
    fn set_matches_print_as_iptables_save_does_and_come_last() {
        let rule = Rule::new(Target::Drop)
            .match_set(SetMatch::new(
                "SVCP-IPVS-LB-FW",
                &[SetDir::Dst, SetDir::Dst],
            ))
            .comment("svcp-ipvs LB source ranges")
            .match_set(SetMatch::not(
                "SVCP-IPVS-LB-SRC",
                &[SetDir::Dst, SetDir::Dst, SetDir::Src],
            ));
        assert_eq!(
            rule.to_string(),
            "-m comment --comment \"svcp-ipvs LB source ranges\" \
             -m set --match-set SVCP-IPVS-LB-FW dst,dst \
             -m set ! --match-set SVCP-IPVS-LB-SRC dst,dst,src -j DROP"
        );
        assert_eq!(
            rule.args()[9..],
            [
                "-m",
                "set",
                "!",
                "--match-set",
                "SVCP-IPVS-LB-SRC",
                "dst,dst,src",
                "-j",
                "DROP"
            ]
        );
        // iptables-save prints a one-word comment unquoted; it reads back the same.
        let saved = "-m comment --comment svcp-ipvs -j SVCP-IPVS-FILTER";
        assert_eq!(
            parse_rule_spec(saved),
            Ok(Rule::new(Target::Jump(ChainName::new("SVCP-IPVS-FILTER"))).comment("svcp-ipvs"))
        );
    }

    #[test]
    fn probability_prints_like_kube_proxy() {
        assert_eq!(Probability::ratio(1, 3).to_string(), "0.3333333333");
        assert_eq!(Probability::ratio(1, 2).to_string(), "0.5000000000");
        assert_eq!(Probability::ratio(2, 3).to_string(), "0.6666666667");
        assert_eq!(Probability::ratio(1, 1).to_string(), "1.0000000000");
        assert_eq!(
            Probability::parse("0.3333333333"),
            Some(Probability::ratio(1, 3))
        );
        assert_eq!(Probability::parse("1.5000000000"), None);
        // iptables-save prints 11 digits of the kernel's 32-bit value.
        assert_eq!(
            Probability::parse("0.33333333349"),
            Some(Probability::ratio(1, 3))
        );
        assert_eq!(
            Probability::parse("0.50000000000"),
            Some(Probability::ratio(1, 2))
        );
    }

    #[test]
    fn every_shape_round_trips() {
        let rules = [
            Rule::new(Target::Dnat("198.18.1.2:80".parse().expect("addr")))
                .source_net(IpNet::from(ip("198.18.1.2")), true)
                .protocol(Protocol::Udp)
                .comment("ns/svc:p -> 198.18.1.2:80")
                .with(Match::Statistic(Probability::ratio(1, 3))),
            Rule::new(Target::Dnat("[2001:db8::1]:80".parse().expect("addr")))
                .protocol(Protocol::Sctp),
            Rule::new(Target::Mark {
                value: 0x6000,
                mask: 0x6000,
            })
            .source(ip("198.18.1.2")),
            Rule::new(Target::Return).with(Match::Mark {
                value: 0x4000,
                mask: 0x4000,
                negated: true,
            }),
            Rule::new(Target::Masquerade { random_fully: true }),
            Rule::new(Target::Reject(RejectWith::TcpReset))
                .destination(ip("198.19.0.1"))
                .protocol(Protocol::Tcp)
                .with(Match::AddrTypeLocal(AddrTypeDir::Dst))
                .dport(Protocol::Tcp, 80),
            Rule::new(Target::Goto(ChainName::new("X")))
                .destination_net("198.19.0.0/20".parse().expect("net"), false),
            Rule::new(Target::Goto(ChainName::new("Y")))
                .protocol(Protocol::Udp)
                .with(Match::DestPortRange {
                    protocol: Protocol::Udp,
                    first: 30000,
                    last: 30015,
                }),
            Rule::new(Target::Accept).with(Match::Conntrack(vec![
                CtState::Related,
                CtState::Established,
            ])),
            Rule::new(Target::Jump(ChainName::new("SEP"))).with(Match::Recent(Recent::Check {
                name: "SEP".into(),
                seconds: 10800,
                family: Family::V6,
            })),
            Rule::new(Target::Drop).with(Match::Recent(Recent::Set {
                name: "SEP".into(),
                family: Family::V4,
            })),
            Rule::new(Target::Jump(ChainName::new("SVCP-IPVS-MARK-MASQ")))
                .comment("svcp-ipvs cluster IP from outside the cluster")
                .match_set(SetMatch::new(
                    "SVCP-IPVS-CLUSTER-IP",
                    &[SetDir::Dst, SetDir::Dst],
                ))
                .match_set(SetMatch::not("SVCP-IPVS-CLUSTER-CIDR", &[SetDir::Src])),
            Rule::new(Target::Mark {
                value: 0x4000,
                mask: 0,
            })
            .match_set(SetMatch::new(
                "SVCP-IPVS-LOOP-BACK6",
                &[SetDir::Dst, SetDir::Dst, SetDir::Src],
            )),
        ];
        for rule in rules {
            let text = rule.to_string();
            assert_eq!(parse_rule_spec(&text), Ok(rule), "round trip of {text}");
        }
    }

    #[test]
    fn unknown_shapes_are_errors() {
        for spec in [
            "-m multiport --dports 80,81 -j ACCEPT",
            "-i eth0 -j ACCEPT",
            "-j SNAT --to-source 198.18.0.1",
            "-m statistic --mode nth --every 2 -j ACCEPT",
            "-j ACCEPT -j DROP",
            "-m comment --comment \"open",
            "-s 198.18.0.1",
            "-m set --match-set A dst -m comment --comment x -j DROP",
            "-m set --match-set A dst,port -j DROP",
            "-m set --match-set A -j DROP",
            "-m set ! ! --match-set A dst -j DROP",
        ] {
            assert!(parse_rule_spec(spec).is_err(), "{spec} should not parse");
        }
    }

    #[test]
    fn saved_copies_count_our_rules_in_their_table_and_chain_only() {
        let hook = Rule::new(Target::Jump(ChainName::new("SVCP-FILTER"))).comment("svcp");
        let input = ChainName::new("INPUT");
        let saved = "*nat\n-A INPUT -m comment --comment svcp -j SVCP-FILTER\nCOMMIT\n\
                     *filter\n:INPUT ACCEPT [0:0]\n\
                     -A INPUT -m comment --comment svcp -j SVCP-FILTER\n\
                     -A INPUT -m comment --comment \"svcp\" -j SVCP-FILTER\n\
                     -A INPUT -m comment --comment other -j SVCP-FILTER\n\
                     -A INPUT -m multiport --dports 1,2 -j ACCEPT\n\
                     -A FORWARD -m comment --comment svcp -j SVCP-FILTER\nCOMMIT\n";
        assert_eq!(
            parse::saved_copies(saved, &[(TableName::Filter, &input, &hook)]),
            [2],
            "both spellings in filter INPUT; not nat's, not FORWARD's, not another comment"
        );
    }

    #[test]
    fn comments_are_sanitized() {
        assert_eq!(sanitize_comment("a \"b\" \\c\n"), "a _b_ _c_");
        assert_eq!(sanitize_comment(&"x".repeat(300)).len(), MAX_COMMENT_LEN);
    }

    #[test]
    fn table_renders_and_parses_back() {
        let mut t = Table::new(TableName::Nat);
        let mut c = Chain::new(ChainName::new("SVCP-A"));
        c.push(Rule::new(Target::Jump(ChainName::new("SVCP-B"))).comment("x y"));
        t.chains.push(c);
        t.chains.push(Chain::new(ChainName::new("SVCP-B")));
        t.deleted.push(ChainName::new("SVCP-OLD"));
        let hook = Rule::new(Target::Jump(ChainName::new("SVCP-A"))).comment("svcp");
        t.edits.push(Edit::Insert {
            chain: ChainName::new("PREROUTING"),
            rule: hook.clone(),
        });
        t.edits.push(Edit::Delete {
            chain: ChainName::new("OUTPUT"),
            rule: hook,
        });
        let text = t.to_string();
        assert_eq!(
            text,
            "*nat\n:SVCP-A - [0:0]\n:SVCP-B - [0:0]\n:SVCP-OLD - [0:0]\n\
             -A SVCP-A -m comment --comment \"x y\" -j SVCP-B\n\
             -I PREROUTING -m comment --comment \"svcp\" -j SVCP-A\n\
             -D OUTPUT -m comment --comment \"svcp\" -j SVCP-A\n-X SVCP-OLD\nCOMMIT\n"
        );
        assert_eq!(parse_restore(&text), Ok(vec![t]));
    }
}
