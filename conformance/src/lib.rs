//! A conformance suite shared by every backend (issue #11): kube-proxy's packet-flow cases
//! (`pkg/proxy/iptables/proxier_test.go` and `pkg/proxy/nftables/proxier_test.go`, the flows
//! their tests hand to `runPacketFlowTests`) as black-box tests with real traffic.
//!
//! Where kube-proxy pushes a virtual packet through its rendered rules, this suite builds a
//! node in network namespaces (a client outside the cluster, the node with the dataplane, pods
//! on it, another node with pods behind it), drives a [`proxy_core::Dataplane`] inside the
//! node's namespace, and sends real TCP and UDP. Endpoints answer with their own address and
//! the peer they saw, so a case checks which endpoints answer, whether the connection was
//! masqueraded, and whether a refused connection is rejected fast or dropped. One case list
//! ([`cases`]) runs against every backend (iptables-legacy, iptables-nft, userspace, IPVS in a
//! VM, nftables); each backend's test binary is a few lines:
//!
//! ```no_run
//! use conformance::{cases, driver::NodeDriver, runner, topology::Topology};
//! # fn make() -> conformance::kube_layout::KubeProxyLayout { unimplemented!() }
//! let topology = Topology::new("ref");
//! let driver = NodeDriver::start(topology.node(), "kube-proxy-layout", make);
//! let report = runner::run_suite(
//!     cases::Backend::KubeProxyLayout,
//!     &topology,
//!     &driver,
//!     &cases::scenarios(),
//!     cases::HOST_TIMEOUT,
//! );
//! println!("{report}");
//! report.assert_conformant();
//! ```
//!
//! kube-proxy's own rule layout ([`kube_layout`]) runs the cluster-IP cases too: it proves the
//! harness, so that a failure elsewhere means the backend is wrong.
//!
//! Modules:
//! - [`cases`]: the case list, each case citing its origin, with per-backend skips and known
//!   failures;
//! - [`topology`]: the namespaces, links and addresses (198.18.0.0/15 only);
//! - [`endpoints`]: the endpoints' servers, which say who they are and whom they saw;
//! - [`probe`]: one connection or datagram from a bound source, and its outcome;
//! - [`driver`]: a dataplane on its own runtime inside the node's namespace;
//! - [`runner`]: one sync, every flow, a report with passes, skips and known failures;
//! - [`kube_layout`]: kube-proxy's cluster-IP rules as a dataplane (the reference).
//!
//! Everything here needs root at run time and touches only namespaces it creates.
#![forbid(unsafe_code)]

pub mod cases;
pub mod driver;
pub mod endpoints;
pub mod error;
pub mod kube_layout;
pub mod probe;
pub mod runner;
pub mod topology;

pub use error::ConformanceError;
