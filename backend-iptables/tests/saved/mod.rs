//! The namespace's iptables state as comparable text, shared by the namespace tests that check
//! what a sync or a cleanup leaves behind.
#![allow(dead_code)]

use std::process::Command;

use backend_iptables::apply::Variant;
use backend_iptables::rules::Family;

/// Every rule and user chain iptables-save shows, per family and table, without counters. Empty
/// tables (which legacy ip6tables creates on first use) and ACCEPT policies of built-in chains
/// carry no state, so they are left out.
pub fn save_all(variant: Variant) -> String {
    let mut out = Vec::new();
    for family in Family::ALL {
        let o = Command::new(variant.save_binary(family))
            .output()
            .expect("save");
        let mut table = String::new();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = name.to_owned();
            } else if line.starts_with("-A") {
                out.push(format!("{family} {table} {line}"));
            } else if let Some(decl) = line.strip_prefix(':') {
                let mut words = decl.split_whitespace();
                let (chain, policy) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                if policy != "ACCEPT" {
                    out.push(format!("{family} {table} :{chain} {policy}"));
                }
            }
        }
    }
    out.sort();
    out.join("\n")
}
