//! Hooks (through the `iptables` crate) and cleanup in a network namespace this test creates and
//! enters on its own thread. Needs root. Every step first checks that the thread is not in the
//! root namespace.

mod cases;
mod saved;
use std::process::Command;

use backend_iptables::apply::{apply_plan, CommandRunner, Variant};
use backend_iptables::cleanup::cleanup_chains;
use backend_iptables::hooks::{canaries_present, ensure_hooks, remove_hooks, IptablesHooks};
use backend_iptables::plan::Planner;
use backend_iptables::rules::Family;
use backend_iptables::testing::trace::{Packet, Tracer};
use saved::save_all;
use testkit::netns::Netns;

#[test]
#[ignore = "needs root: CI runs --include-ignored"]
fn hooks_then_cleanup_leave_the_namespace_as_it_was() {
    for variant in [Variant::Legacy, Variant::Nft] {
        let ns = Netns::new(&variant.to_string());
        ns.run(move || {
            // Someone else's rules, which must survive.
            for args in [
                [
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-p",
                    "udp",
                    "--dport",
                    "9",
                    "-j",
                    "RETURN",
                ],
                [
                    "-t", "filter", "-A", "FORWARD", "-p", "tcp", "--dport", "9", "-j", "ACCEPT",
                ],
            ] {
                let bin = match variant {
                    Variant::Legacy => "iptables-legacy",
                    Variant::Nft => "iptables-nft",
                };
                assert!(Command::new(bin)
                    .args(args)
                    .status()
                    .expect("run")
                    .success());
            }
            let before = save_all(variant);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let planner = Planner::new(cases::config()).expect("valid config");
            let table = cases::cases()
                .into_iter()
                .find(|c| c.name == "etp_local")
                .expect("case")
                .table;
            let runner = CommandRunner::new(variant);
            rt.block_on(apply_plan(&runner, &planner.plan_full(&table)))
                .expect("apply");
            let hooks = IptablesHooks::new(variant);
            let n = ensure_hooks(&hooks, &planner.hooks()).expect("hooks");
            assert_eq!(n, planner.hooks().len() * 2);
            assert_eq!(ensure_hooks(&hooks, &planner.hooks()).expect("again"), 0);

            // The kernel's own view, traced: the hooks send service traffic to our chains.
            let save = Command::new(variant.save_binary(Family::V4))
                .output()
                .expect("save");
            let text = String::from_utf8_lossy(&save.stdout);
            let names = planner.names().clone();
            let keep = |n: &str| names.is_owned(n);
            let ours = backend_iptables::rules::parse_save(&text, &keep).expect("our shapes");
            let restore: String = ours.iter().map(|t| t.to_string()).collect();
            let tracer = Tracer::new(Family::V4, &restore, &planner.hooks(), cases::local_addrs())
                .expect("parses");
            let t = tracer
                .trace(&Packet::tcp(cases::CLIENT, "198.19.100.7", 80))
                .expect("trace");
            assert_eq!(t.summary(), "198.18.1.7:80", "{t}");
            assert!(
                text.contains(
                    "-A PREROUTING -m comment --comment \"service portals\" -j SVCP-SERVICES"
                ),
                "{text}"
            );

            let canary = planner.names().canary();
            assert!(
                canaries_present(&hooks, &canary, &Family::ALL).expect("check"),
                "{variant}: canaries written"
            );

            assert_eq!(remove_hooks(&hooks, &planner.hooks()).expect("unhook"), n);
            let deleted = rt
                .block_on(cleanup_chains(&runner, &runner, planner.names()))
                .expect("cleanup");
            assert!(deleted >= 8, "deleted {deleted}");
            assert_eq!(
                save_all(variant),
                before,
                "{variant}: namespace not restored"
            );
        });
    }
}
