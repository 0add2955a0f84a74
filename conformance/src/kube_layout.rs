//! kube-proxy's own rule layout as a [`Dataplane`], the reference that proves the harness: the
//! cluster-IP rules `backend_iptables::testing::kube_layout` renders (a services chain, a `SVC`
//! chain per service port, a `SEP` chain per ready endpoint that marks hairpin traffic for
//! masquerade and DNATs), completed with what `pkg/proxy/iptables/proxier.go` writes around
//! them for cluster IPs, as `TestOverallIPTablesRules` shows it:
//!
//! - first in each `SVC` chain, `! -s <cluster CIDR> -j KUBE-MARK-MASQ` (traffic to a cluster
//!   IP from outside the pod network is masqueraded);
//! - `KUBE-POSTROUTING`: return unless marked, clear the mark, `MASQUERADE`;
//! - jumps from nat `PREROUTING` and `OUTPUT` to the services chain, and from `POSTROUTING` to
//!   `KUBE-POSTROUTING`.
//!
//! It writes the whole nat table with `iptables-restore` (no `--noflush`): it runs only in a
//! namespace of the suite's own. Chains take the prefix `KPL-`, never `KUBE-`.

use std::io::Write as _;
use std::process::{Command, Stdio};

use async_trait::async_trait;
use backend_iptables::apply::Variant;
use backend_iptables::names::Names;
use backend_iptables::rules::{Chain, ChainName, Family, Match, Rule, Table, TableName, Target};
use backend_iptables::testing::kube_layout::kube_proxy_nat;
use ipnet::IpNet;
use proxy_core::dataplane::{
    Capabilities, CleanupReport, Dataplane, DryRun, SyncReport, SyncRequest,
};
use proxy_core::{DataplaneError, ServiceTable};

use crate::error::ConformanceError;

/// The mark kube-proxy uses for masquerade (`--iptables-masquerade-bit` 14).
const MASQ_MARK: u32 = 0x4000;

/// kube-proxy's cluster-IP layout in the calling thread's namespace.
#[derive(Debug)]
pub struct KubeProxyLayout {
    names: Names,
    cluster_cidr: IpNet,
    variant: Variant,
    masquerade: bool,
}

impl KubeProxyLayout {
    /// The layout with chain prefix `KPL-`, masquerading traffic to cluster IPs from outside
    /// `cluster_cidr`, written with `variant`'s `iptables-restore`.
    pub fn new(cluster_cidr: IpNet, variant: Variant) -> Self {
        Self {
            names: Names::new("KPL-").expect("KPL- is a valid prefix"),
            cluster_cidr,
            variant,
            masquerade: true,
        }
    }

    /// The same layout with every masquerade mark left out (the hairpin marks of the `SEP`
    /// chains and the cluster-CIDR marks of the `SVC` chains): a broken reference, with which
    /// the suite must fail exactly the flows that expect masquerade. It proves that the
    /// harness sees a missing masquerade.
    #[must_use]
    pub fn without_masquerade(mut self) -> Self {
        self.masquerade = false;
        self
    }

    /// The whole nat table for `table`.
    pub fn render(&self, table: &ServiceTable) -> Table {
        let mut nat = kube_proxy_nat(table, &self.names);
        let mark_masq = self.names.mark_masq();
        // kube-proxy's `! -s clusterCIDR -j KUBE-MARK-MASQ` heads every SVC chain; the SVC
        // chains are those the services chain jumps to.
        let services = self.names.services();
        let svc_chains: Vec<ChainName> = nat
            .chain(&services)
            .map(|c| {
                c.rules
                    .iter()
                    .filter_map(|r| r.target_chain().cloned())
                    .collect()
            })
            .unwrap_or_default();
        if !self.masquerade {
            for chain in &mut nat.chains {
                chain.rules.retain(|r| r.target_chain() != Some(&mark_masq));
            }
        }
        let masquerading = self.masquerade;
        for chain in nat
            .chains
            .iter_mut()
            .filter(|c| masquerading && svc_chains.contains(&c.name))
        {
            chain.rules.insert(
                0,
                Rule::new(Target::Jump(mark_masq.clone()))
                    .source_net(self.cluster_cidr, true)
                    .comment("masquerade traffic from outside the pod network"),
            );
        }
        let postrouting = self.names.postrouting();
        let mut post = Chain::new(postrouting.clone());
        post.push(Rule::new(Target::Return).with(Match::Mark {
            value: MASQ_MARK,
            mask: MASQ_MARK,
            negated: true,
        }));
        post.push(Rule::new(Target::Mark {
            value: 0,
            mask: MASQ_MARK,
        }));
        post.push(
            Rule::new(Target::Masquerade {
                random_fully: false,
            })
            .comment("kubernetes service traffic requiring SNAT"),
        );
        nat.chains.push(post);
        for (hook, target) in [
            ("PREROUTING", &services),
            ("OUTPUT", &services),
            ("POSTROUTING", &postrouting),
        ] {
            let mut chain = Chain::new(ChainName::new(hook));
            chain.push(Rule::new(Target::Jump(target.clone())));
            nat.chains.push(chain);
        }
        nat
    }

    fn restore(&self, input: &str) -> Result<(), ConformanceError> {
        let program = self.variant.restore_binary(Family::V4);
        let failed = |status: String, stderr: String| ConformanceError::Command {
            command: format!("{program} -w"),
            status,
            stderr,
        };
        let mut child = Command::new(program)
            .arg("-w")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot start: {e}"), String::new()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| failed(format!("cannot write its input: {e}"), String::new()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(format!("cannot wait: {e}"), String::new()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed(
                out.status.to_string(),
                format!("{}\ninput:\n{input}", String::from_utf8_lossy(&out.stderr)),
            ))
        }
    }
}

#[async_trait]
impl Dataplane for KubeProxyLayout {
    fn name(&self) -> &'static str {
        "kube-proxy-layout"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::everything()
    }

    async fn sync(&mut self, request: SyncRequest<'_>) -> Result<SyncReport, DataplaneError> {
        let started = std::time::Instant::now();
        let nat = self.render(request.desired);
        let mut report = SyncReport::for_request(&request);
        report.objects_written = nat.rule_count();
        self.restore(&nat.to_string())
            .map_err(|e| DataplaneError::backend(self.name(), e))?;
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn cleanup(&mut self) -> Result<CleanupReport, DataplaneError> {
        // The namespace goes with the suite; an empty nat table is all there is to write.
        self.restore(&Table::new(TableName::Nat).to_string())
            .map_err(|e| DataplaneError::backend(self.name(), e))?;
        Ok(CleanupReport::default())
    }

    fn dry_run(&self, table: &ServiceTable) -> Result<DryRun, DataplaneError> {
        Ok(DryRun::new(self.render(table).to_string()))
    }
}
