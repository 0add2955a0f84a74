//! Parsing restore text and `iptables-save` output of *our* rule shapes back into the model.
//! Anything else is an error, never silently skipped.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use proxy_core::Protocol;

use super::{
    full_mask, AddrMatch, AddrTypeDir, Chain, ChainName, CtState, Edit, Family, Match, Probability,
    Recent, RejectWith, Rule, SetDir, SetMatch, Table, TableName, Target,
};

/// Restore text that is not one of our shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The offending line.
    pub text: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line, self.reason, self.text)
    }
}

/// Splits a line into words, honouring double quotes (no escapes: we never write any).
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => word.push(c),
                    None => return Err("unterminated quote".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
}

struct Words {
    words: Vec<String>,
    pos: usize,
}

impl Words {
    fn next(&mut self) -> Option<&str> {
        let w = self.words.get(self.pos)?;
        self.pos += 1;
        Some(w.as_str())
    }

    fn expect(&mut self, want: &str) -> Result<(), String> {
        match self.next() {
            Some(w) if w == want => Ok(()),
            Some(w) => Err(format!("expected {want:?}, found {w:?}")),
            None => Err(format!("expected {want:?}, found end of rule")),
        }
    }

    fn value(&mut self, what: &str) -> Result<String, String> {
        self.next()
            .map(str::to_owned)
            .ok_or_else(|| format!("missing {what}"))
    }
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("bad address {text:?}"))
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    Protocol::ALL
        .into_iter()
        .find(|p| p.as_str() == text)
        .ok_or_else(|| format!("unknown protocol {text:?}"))
}

fn parse_hex(text: &str) -> Result<u32, String> {
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| format!("expected hex, found {text:?}"))?;
    u32::from_str_radix(digits, 16).map_err(|_| format!("bad hex {text:?}"))
}

fn parse_value_mask(text: &str) -> Result<(u32, u32), String> {
    let (v, m) = text
        .split_once('/')
        .ok_or_else(|| format!("expected value/mask, found {text:?}"))?;
    Ok((parse_hex(v)?, parse_hex(m)?))
}

fn family_of_mask(mask: &str) -> Result<Family, String> {
    [Family::V4, Family::V6]
        .into_iter()
        .find(|f| full_mask(*f) == mask)
        .ok_or_else(|| format!("unsupported recent mask {mask:?}"))
}

/// `[!] --match-set NAME DIRS` after `-m set`.
fn parse_set(words: &mut Words) -> Result<SetMatch, String> {
    let negated = match words.next() {
        Some("!") => {
            words.expect("--match-set")?;
            true
        }
        Some("--match-set") => false,
        other => return Err(format!("unsupported set option {other:?}")),
    };
    let name = words.value("set name")?;
    let list = words.value("set dimensions")?;
    let dirs = list
        .split(',')
        .map(|d| match d {
            "src" => Ok(SetDir::Src),
            "dst" => Ok(SetDir::Dst),
            other => Err(format!("unknown set dimension {other:?}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if dirs.len() > 6 {
        return Err(format!("more than 6 set dimensions in {list:?}"));
    }
    Ok(SetMatch {
        name,
        dirs,
        negated,
    })
}

fn parse_module(words: &mut Words, module: &str, rule: &mut Rule) -> Result<(), String> {
    if module == "set" {
        rule.sets.push(parse_set(words)?);
        return Ok(());
    }
    if !rule.sets.is_empty() {
        // We write set matches last; anything else would not print back as parsed.
        return Err(format!("match module {module:?} after a set match"));
    }
    let m = match module {
        "comment" => {
            words.expect("--comment")?;
            Match::Comment(words.value("comment text")?)
        }
        "tcp" | "udp" | "sctp" => {
            words.expect("--dport")?;
            let port = words.value("port")?;
            let protocol = parse_protocol(module)?;
            let number = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {port:?}"));
            match port.split_once(':') {
                Some((first, last)) => Match::DestPortRange {
                    protocol,
                    first: number(first)?,
                    last: number(last)?,
                },
                None => Match::DestPort {
                    protocol,
                    port: number(&port)?,
                },
            }
        }
        "addrtype" => match words.next() {
            Some("--src-type") => {
                words.expect("LOCAL")?;
                Match::AddrTypeLocal(AddrTypeDir::Src)
            }
            Some("--dst-type") => {
                words.expect("LOCAL")?;
                Match::AddrTypeLocal(AddrTypeDir::Dst)
            }
            other => return Err(format!("unsupported addrtype option {other:?}")),
        },
        "statistic" => {
            words.expect("--mode")?;
            words.expect("random")?;
            words.expect("--probability")?;
            let p = words.value("probability")?;
            Match::Statistic(
                Probability::parse(&p).ok_or_else(|| format!("bad probability {p:?}"))?,
            )
        }
        "recent" => match words.next() {
            Some("--rcheck") => {
                words.expect("--seconds")?;
                let s = words.value("seconds")?;
                let seconds = s.parse().map_err(|_| format!("bad seconds {s:?}"))?;
                words.expect("--reap")?;
                words.expect("--name")?;
                let name = words.value("recent name")?;
                words.expect("--mask")?;
                let family = family_of_mask(&words.value("mask")?)?;
                words.expect("--rsource")?;
                Match::Recent(Recent::Check {
                    name,
                    seconds,
                    family,
                })
            }
            Some("--set") => {
                words.expect("--name")?;
                let name = words.value("recent name")?;
                words.expect("--mask")?;
                let family = family_of_mask(&words.value("mask")?)?;
                words.expect("--rsource")?;
                Match::Recent(Recent::Set { name, family })
            }
            other => return Err(format!("unsupported recent option {other:?}")),
        },
        "mark" => {
            let negated = match words.next() {
                Some("!") => {
                    words.expect("--mark")?;
                    true
                }
                Some("--mark") => false,
                other => return Err(format!("unsupported mark option {other:?}")),
            };
            let (value, mask) = parse_value_mask(&words.value("mark")?)?;
            Match::Mark {
                value,
                mask,
                negated,
            }
        }
        "conntrack" => {
            words.expect("--ctstate")?;
            let list = words.value("ctstate")?;
            let states = list
                .split(',')
                .map(|s| CtState::parse(s).ok_or_else(|| format!("unknown ctstate {s:?}")))
                .collect::<Result<Vec<_>, _>>()?;
            Match::Conntrack(states)
        }
        other => return Err(format!("unsupported match module {other:?}")),
    };
    rule.matches.push(m);
    Ok(())
}

fn parse_target(words: &mut Words, jump: &str) -> Result<Target, String> {
    Ok(match jump {
        "RETURN" => Target::Return,
        "ACCEPT" => Target::Accept,
        "DROP" => Target::Drop,
        "REJECT" => {
            words.expect("--reject-with")?;
            match words.next() {
                Some("icmp-port-unreachable") => Target::Reject(RejectWith::IcmpPortUnreachable),
                Some("icmp6-port-unreachable") => Target::Reject(RejectWith::Icmp6PortUnreachable),
                Some("tcp-reset") => Target::Reject(RejectWith::TcpReset),
                other => return Err(format!("unsupported reject-with {other:?}")),
            }
        }
        "DNAT" => {
            words.expect("--to-destination")?;
            let to = words.value("DNAT destination")?;
            Target::Dnat(
                to.parse()
                    .map_err(|_| format!("bad DNAT destination {to:?}"))?,
            )
        }
        "MARK" => {
            words.expect("--set-xmark")?;
            let (value, mask) = parse_value_mask(&words.value("mark")?)?;
            Target::Mark { value, mask }
        }
        "MASQUERADE" => {
            if words.words.get(words.pos).map(String::as_str) == Some("--random-fully") {
                words.pos += 1;
                Target::Masquerade { random_fully: true }
            } else {
                Target::Masquerade {
                    random_fully: false,
                }
            }
        }
        chain if !chain.is_empty() && !chain.starts_with('-') => {
            Target::Jump(ChainName::new(chain))
        }
        other => return Err(format!("unsupported target {other:?}")),
    })
}

/// Parses a rule spec (what follows `-A CHAIN`) of one of our shapes.
///
/// # Errors
/// A message naming the first word that is not one of our shapes.
pub fn parse_rule_spec(spec: &str) -> Result<Rule, String> {
    let mut words = Words {
        words: tokenize(spec)?,
        pos: 0,
    };
    let mut rule = Rule::new(Target::Return);
    let mut target = None;
    let mut negate = false;
    while let Some(word) = words.next().map(str::to_owned) {
        if target.is_some() {
            return Err(format!("unexpected {word:?} after the target"));
        }
        let was_negated = std::mem::take(&mut negate);
        match word.as_str() {
            "!" => {
                if was_negated {
                    return Err("double negation".into());
                }
                negate = true;
            }
            "-s" | "-d" => {
                let addr = AddrMatch {
                    net: parse_net(&words.value("address")?)?,
                    negated: was_negated,
                };
                let slot = if word == "-s" {
                    &mut rule.source
                } else {
                    &mut rule.destination
                };
                if slot.replace(addr).is_some() {
                    return Err(format!("{word} given twice"));
                }
            }
            "-p" if !was_negated => {
                rule.protocol = Some(parse_protocol(&words.value("protocol")?)?);
            }
            "-m" if !was_negated => {
                let module = words.value("module")?;
                parse_module(&mut words, &module, &mut rule)?;
            }
            "-j" if !was_negated => {
                let name = words.value("target")?;
                target = Some(parse_target(&mut words, &name)?);
            }
            "-g" if !was_negated => {
                target = Some(Target::Goto(ChainName::new(words.value("goto chain")?)));
            }
            other => return Err(format!("unsupported word {other:?}")),
        }
    }
    rule.target = target.ok_or("rule has no target")?;
    Ok(rule)
}

/// Parses restore input (or `iptables-save` output of our chains) into tables.
///
/// Accepts `#` comments, `*table`, `:CHAIN POLICY [counters]`, `-A CHAIN spec`, `-I`/`-D
/// BUILTIN spec` ([`Edit`]s), `-X CHAIN` and `COMMIT`. Rules of one chain are gathered in order;
/// chains are kept in declaration order.
///
/// # Errors
/// [`ParseError`] with the line number, the line and why it is not one of our shapes.
pub fn parse_restore(text: &str) -> Result<Vec<Table>, ParseError> {
    parse_tables(text, &|_| true)
}

/// Parses `iptables-save` output, keeping only chains whose name `keep` accepts (ours): other
/// chains and their rules, whatever their shape, are skipped, as are rules in built-in chains.
///
/// # Errors
/// [`ParseError`] for a kept chain's rule that is not one of our shapes.
pub fn parse_save(text: &str, keep: &dyn Fn(&str) -> bool) -> Result<Vec<Table>, ParseError> {
    parse_tables(text, &|name| keep(name))
}

fn parse_tables(text: &str, keep: &dyn Fn(&str) -> bool) -> Result<Vec<Table>, ParseError> {
    let mut tables = Vec::new();
    let mut current: Option<Table> = None;
    // Chain name -> index in `current.chains`, so parsing stays linear.
    let mut index_of: HashMap<ChainName, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let err = |reason: String| ParseError {
            line: index + 1,
            text: line.to_owned(),
            reason,
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('*') {
            if current.is_some() {
                return Err(err("table started before COMMIT".into()));
            }
            let name = match name {
                "nat" => TableName::Nat,
                "filter" => TableName::Filter,
                other => return Err(err(format!("unsupported table {other:?}"))),
            };
            current = Some(Table::new(name));
            index_of.clear();
            continue;
        }
        let table = current
            .as_mut()
            .ok_or_else(|| err("line outside a table".into()))?;
        if trimmed == "COMMIT" {
            tables.extend(current.take());
        } else if let Some(decl) = trimmed.strip_prefix(':') {
            let name = decl
                .split_whitespace()
                .next()
                .ok_or_else(|| err("empty chain line".into()))?;
            let name = ChainName::new(name);
            if !keep(name.as_str()) {
                continue;
            }
            if !index_of.contains_key(&name) && !name.is_builtin() {
                index_of.insert(name.clone(), table.chains.len());
                table.chains.push(Chain::new(name));
            }
        } else if let Some(rest) = trimmed.strip_prefix("-A ") {
            let (chain, spec) = rest
                .split_once(' ')
                .ok_or_else(|| err("rule without a spec".into()))?;
            if !keep(chain) {
                continue;
            }
            let rule = parse_rule_spec(spec).map_err(err)?;
            let name = ChainName::new(chain);
            match index_of.get(&name) {
                Some(&i) => table.chains[i].rules.push(rule),
                None if name.is_builtin() => {
                    let mut c = Chain::new(name.clone());
                    c.rules.push(rule);
                    index_of.insert(name, table.chains.len());
                    table.chains.push(c);
                }
                None => return Err(err(format!("rule for undeclared chain {chain}"))),
            }
        } else if let Some((op, rest)) = trimmed
            .strip_prefix("-I ")
            .map(|rest| ("-I", rest))
            .or_else(|| trimmed.strip_prefix("-D ").map(|rest| ("-D", rest)))
        {
            let (chain, spec) = rest
                .split_once(' ')
                .ok_or_else(|| err("edit without a spec".into()))?;
            let chain = ChainName::new(chain);
            if !chain.is_builtin() {
                return Err(err(format!("{op} of chain {chain}, not a built-in one")));
            }
            let rule = parse_rule_spec(spec).map_err(err)?;
            table.edits.push(if op == "-I" {
                Edit::Insert { chain, rule }
            } else {
                Edit::Delete { chain, rule }
            });
        } else if let Some(name) = trimmed.strip_prefix("-X ") {
            let name = ChainName::new(name.trim());
            if index_of.remove(&name).is_some() {
                table.chains.retain(|c| c.name != name);
                index_of = table
                    .chains
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name.clone(), i))
                    .collect();
            }
            table.deleted.push(name);
        } else {
            return Err(err("unsupported line".into()));
        }
    }
    if current.is_some() {
        return Err(ParseError {
            line: text.lines().count(),
            text: String::new(),
            reason: "missing COMMIT".into(),
        });
    }
    Ok(tables)
}

/// How many copies of each of `wanted` (table, chain, rule; same index) one family's
/// `iptables-save` output shows: a saved `-A` line of that table and chain that prints exactly as
/// the rule, or reads back as it (`iptables-save` prints a one-word comment unquoted). Foreign
/// rules, whatever their shape, never count; nothing is an error.
pub fn saved_copies(saved: &str, wanted: &[(TableName, &ChainName, &Rule)]) -> Vec<usize> {
    let mut copies = vec![0; wanted.len()];
    let rendered: Vec<String> = wanted.iter().map(|(_, _, rule)| rule.to_string()).collect();
    let mut table = None;
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = match name.trim() {
                "nat" => Some(TableName::Nat),
                "filter" => Some(TableName::Filter),
                _ => None,
            };
            continue;
        }
        let (Some(table), Some(rest)) = (table, line.strip_prefix("-A ")) else {
            continue;
        };
        let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut parsed = None;
        for (i, (want_table, want_chain, rule)) in wanted.iter().enumerate() {
            if *want_table != table || want_chain.as_str() != chain {
                continue;
            }
            // Cheap first: most saved lines are not ours, and ours mostly print as we render.
            if spec == rendered[i] {
                copies[i] += 1;
                continue;
            }
            let parsed = parsed.get_or_insert_with(|| parse_rule_spec(spec).ok());
            if parsed.as_ref() == Some(*rule) {
                copies[i] += 1;
            }
        }
    }
    copies
}
