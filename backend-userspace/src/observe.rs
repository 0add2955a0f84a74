//! Observe: the listeners that are open now and their routes, in the same model as the plan, so
//! that tests compare `observe()` with `plan().desired`, and `--dry-run` prints either with
//! [`render`].

use std::fmt::Write as _;

use crate::plan::{Listeners, RouteTarget};

/// One line per listener, in key order:
/// `tcp 127.0.0.10:8000 default/web:http cluster-ip rr -> 127.0.0.50:8080, 127.0.0.51:8080 w2`
/// (with ` affinity=10800s` and ` idle=60s` when the port sets them).
pub fn render(listeners: &Listeners) -> String {
    let mut out = String::new();
    for (key, route) in listeners {
        let _ = write!(
            out,
            "{key} {} {} {}",
            route.service_port,
            route.kind.as_str(),
            route.scheduler
        );
        if let Some(timeout) = route.affinity_timeout {
            let _ = write!(out, " affinity={}s", timeout.as_secs());
        }
        if let Some(timeout) = route.port_idle_timeout {
            let _ = write!(out, " idle={}s", timeout.as_secs());
        }
        if !route.source_ranges.is_empty() {
            let ranges: Vec<String> = route
                .source_ranges
                .iter()
                .map(ToString::to_string)
                .collect();
            let _ = write!(out, " from={}", ranges.join(","));
        }
        match &route.target {
            RouteTarget::Endpoints(backends) => {
                let list: Vec<String> = backends
                    .iter()
                    .map(|b| {
                        if b.weight == 1 {
                            b.addr.to_string()
                        } else {
                            format!("{} w{}", b.addr, b.weight)
                        }
                    })
                    .collect();
                let _ = writeln!(out, " -> {}", list.join(", "));
            }
            RouteTarget::Reject => out.push_str(" -> reject (no endpoints)\n"),
            RouteTarget::Drop => out.push_str(" -> drop (no local endpoints)\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AddressKind, Backend, ListenerKey, Route};
    use proxy_core::table::{Protocol, Scheduler, ServicePortName};

    #[test]
    fn render_lists_each_listener_on_one_line() {
        let mut listeners = Listeners::new();
        let route = |target| Route {
            service_port: ServicePortName::new("default", "web", "http"),
            kind: AddressKind::ClusterIp,
            target,
            short_circuit: None,
            scheduler: Scheduler::RoundRobin,
            affinity_timeout: Some(std::time::Duration::from_secs(10)),
            port_idle_timeout: None,
            source_ranges: Vec::new(),
        };
        listeners.insert(
            ListenerKey {
                protocol: Protocol::Tcp,
                addr: "127.0.0.10:8000".parse().expect("addr"),
            },
            route(RouteTarget::Endpoints(vec![
                Backend {
                    addr: "127.0.0.50:8080".parse().expect("addr"),
                    weight: 1,
                },
                Backend {
                    addr: "127.0.0.51:8080".parse().expect("addr"),
                    weight: 2,
                },
            ])),
        );
        listeners.insert(
            ListenerKey {
                protocol: Protocol::Udp,
                addr: "127.0.0.10:53".parse().expect("addr"),
            },
            Route {
                port_idle_timeout: Some(std::time::Duration::from_secs(60)),
                ..route(RouteTarget::Reject)
            },
        );
        assert_eq!(
            render(&listeners),
            "tcp 127.0.0.10:8000 default/web:http cluster-ip rr affinity=10s -> 127.0.0.50:8080, 127.0.0.51:8080 w2\n\
             udp 127.0.0.10:53 default/web:http cluster-ip rr affinity=10s idle=60s -> reject (no endpoints)\n"
        );
    }
}
