//! `embed`: the library embedded the way a CNI agent or a mesh does, in one short file to copy.
//!
//! A small in-process controller emits watch events (services, endpoint slices, deletions), the
//! agent feeds each to a [`ChangeTracker`], a [`SyncLoop`] drives the userspace backend on
//! loopback, and the agent prints each outcome as it applies. Everything runs on 127.0.0.0/8 and
//! needs no privileges: `cargo run -p examples --bin embed`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use backend_userspace::{UserspaceConfig, UserspaceDataplane};
use proxy_core::prometheus_client::registry::Registry;
use proxy_core::tracker::{
    ChangeTracker, EndpointSlice, Service, ServiceName, ServicePortSpec, SliceEndpoint,
};
use proxy_core::{SyncConfig, SyncLoop};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the agent's watch of the cluster delivers (Kubernetes-shaped, in our model's terms).
#[derive(Debug)]
enum WatchEvent {
    Service(Service),
    Slice(EndpointSlice),
    ServiceDeleted(ServiceName),
}

const VIP: &str = "127.0.0.10";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Two endpoints that answer with their name.
    let pods = [("127.0.0.2", "pod-a"), ("127.0.0.3", "pod-b")];
    let mut pod_port = 0;
    for (ip, name) in pods {
        pod_port = serve_name(SocketAddr::new(ip.parse()?, pod_port), name).await?;
    }

    // The backend, its tracker, the sync loop, and the handle we read outcomes from.
    let dataplane = UserspaceDataplane::new(UserspaceConfig::default())?;
    let (mut tracker, source) = ChangeTracker::for_dataplane(&dataplane);
    let config = SyncConfig {
        min_sync_period: Duration::from_millis(10),
        cleanup_on_shutdown: true,
        ..SyncConfig::default()
    };
    let mut registry = Registry::default();
    let sync_loop = SyncLoop::new(dataplane, config, &mut registry);
    let handle = sync_loop.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(sync_loop.run(source, async {
        let _ = stopped.await;
    }));

    // The controller: a scripted watch stream.
    let service_port = free_port()?;
    let (events, mut watch) = mpsc::channel(16);
    tokio::spawn(controller(events, service_port, pod_port));

    // The agent: each event to the tracker, then wait for its generation to apply.
    while let Some(event) = watch.recv().await {
        println!("event: {}", describe(&event));
        let generation = match event {
            WatchEvent::Service(service) => tracker.set_service(service),
            WatchEvent::Slice(slice) => tracker.set_endpoint_slice(slice),
            WatchEvent::ServiceDeleted(name) => tracker.delete_service(&name),
        };
        let outcome = tokio::time::timeout(Duration::from_secs(5), handle.wait_for(generation))
            .await
            .context("the change did not apply in 5 s")??;
        println!("  {outcome}");
        let web = SocketAddr::new(VIP.parse()?, service_port);
        println!("  {web} answers: {}", ask(web).await);
    }

    stop.send(()).ok();
    running.await??;
    println!("stopped, listeners closed");
    Ok(())
}

/// The controller's events: a service and its endpoints, a clashing newcomer, an endpoint
/// leaving, the service deleted.
async fn controller(events: mpsc::Sender<WatchEvent>, service_port: u16, pod_port: u16) {
    let web = ServiceName::new("default", "web");
    let service = |name: &ServiceName| {
        Service::new(name.clone())
            .with_cluster_ip(VIP.parse::<IpAddr>().expect("valid ip"))
            .with_port(ServicePortSpec::tcp("http", service_port).with_target_port(pod_port))
    };
    let pod = |ip: &str| SliceEndpoint::new(ip.parse().expect("valid ip")).on_node("node-a");
    let script = [
        WatchEvent::Service(service(&web)),
        WatchEvent::Slice(
            EndpointSlice::new(web.clone(), "web-1")
                .with_endpoint(pod("127.0.0.2"))
                .with_endpoint(pod("127.0.0.3")),
        ),
        // Another service on the same VIP and port: skipped by name, `web` keeps running.
        WatchEvent::Service(service(&ServiceName::new("default", "web-copy"))),
        WatchEvent::Slice(EndpointSlice::new(web.clone(), "web-1").with_endpoint(pod("127.0.0.3"))),
        WatchEvent::ServiceDeleted(web),
    ];
    for event in script {
        if events.send(event).await.is_err() {
            return;
        }
    }
}

fn describe(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Service(s) => format!("service {} set", s.name),
        WatchEvent::Slice(s) => format!(
            "slice {}/{} set with {} endpoint(s)",
            s.service,
            s.name,
            s.endpoints.len()
        ),
        WatchEvent::ServiceDeleted(name) => format!("service {name} deleted"),
    }
}

/// Serves `name` to every connection on `addr` (port 0: any); returns the port.
async fn serve_name(addr: SocketAddr, name: &'static str) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(addr).await.context("pod listener")?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(name.as_bytes()).await;
        }
    });
    Ok(port)
}

/// A free port on the VIP for the service (the userspace backend binds it).
fn free_port() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind((VIP, 0)).context("probe bind")?;
    Ok(probe.local_addr()?.port())
}

/// What `addr` answers, or why not.
async fn ask(addr: SocketAddr) -> String {
    let answer = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    match tokio::time::timeout(Duration::from_secs(2), answer).await {
        Ok(Ok(text)) => text,
        Ok(Err(err)) => format!("({err})"),
        Err(_) => "(timed out)".to_owned(),
    }
}
