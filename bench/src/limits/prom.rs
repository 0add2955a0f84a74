//! svcproxy's metrics, read the way Prometheus reads them: `GET /metrics` over a plain TCP
//! connection (HTTP/1.0, no client library), and a small reader of the text format that sums the
//! series of one family matching some labels.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::BenchError;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `http://ADDR/metrics`.
///
/// # Errors
///
/// [`BenchError::Io`] when the connection fails or times out, [`BenchError::Scenario`] when the
/// answer is not a 200 with a body.
pub fn scrape(addr: SocketAddr) -> Result<String, BenchError> {
    let what = format!("scrape http://{addr}/metrics");
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)
        .map_err(|e| BenchError::io(what.clone(), e))?;
    stream
        .set_read_timeout(Some(SCRAPE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(SCRAPE_TIMEOUT)))
        .map_err(|e| BenchError::io(what.clone(), e))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .map_err(|e| BenchError::io(what.clone(), e))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| BenchError::io(what.clone(), e))?;
    body_of_ok(&response)
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Scenario {
            scenario: "scrape".to_owned(),
            proxy: addr.to_string(),
            detail: format!(
                "not a 200 with a body: {}",
                response.lines().next().unwrap_or("(empty answer)")
            ),
        })
}

/// The body of an HTTP response whose status is 200.
fn body_of_ok(response: &str) -> Option<&str> {
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.split_whitespace().nth(1)?;
    (status == "200").then_some(body)
}

/// The sum of every sample of `name` (the full sample name, with `_total` for counters) whose
/// labels include all of `labels`; `None` when no sample matches.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (sample, label_text) = match series.split_once('{') {
            Some((sample, rest)) => (sample, rest.strip_suffix('}').unwrap_or(rest)),
            None => (series, ""),
        };
        if sample != name {
            continue;
        }
        let has_all = labels
            .iter()
            .all(|(key, want)| split_labels(label_text).any(|(k, v)| k == *key && v == *want));
        if let (true, Ok(value)) = (has_all, value.trim().parse::<f64>()) {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// `key="value"` pairs of a label set. Our label values hold no `",` (service port names are
/// `namespace/name:port`), so a split at `",` is enough.
fn split_labels(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split("\",").filter_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        Some((key.trim(), value.trim().trim_matches('"')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // As svcproxy's /metrics writes it (prometheus-client, OpenMetrics text), trimmed.
    const TEXT: &str = "\
# HELP svcproxy_userspace_connections_failed Flows that reached no endpoint, per service port and reason.
# TYPE svcproxy_userspace_connections_failed counter
svcproxy_userspace_connections_failed_total{service_port=\"default/hog:tcp\",protocol=\"tcp\",reason=\"service_port_limit\"} 1523
svcproxy_userspace_connections_failed_total{service_port=\"default/hog:tcp\",protocol=\"tcp\",reason=\"global_limit\"} 0
svcproxy_userspace_connections_failed_total{service_port=\"default/other:tcp\",protocol=\"tcp\",reason=\"global_limit\"} 7
# TYPE svcproxy_userspace_udp_flows_active gauge
svcproxy_userspace_udp_flows_active{service_port=\"default/dns:udp\",protocol=\"udp\"} 4000
# TYPE svcproxy_userspace_accept_errors counter
svcproxy_userspace_accept_errors_total 12
# EOF
";

    #[test]
    fn sums_the_samples_that_carry_every_asked_label() {
        let failed = "svcproxy_userspace_connections_failed_total";
        assert_eq!(
            sum(TEXT, failed, &[("reason", "service_port_limit")]),
            Some(1523.0)
        );
        assert_eq!(sum(TEXT, failed, &[("reason", "global_limit")]), Some(7.0));
        assert_eq!(
            sum(TEXT, failed, &[("service_port", "default/hog:tcp")]),
            Some(1523.0)
        );
        assert_eq!(sum(TEXT, failed, &[]), Some(1530.0));
    }

    #[test]
    fn reads_series_without_labels_and_tells_missing_from_zero() {
        assert_eq!(
            sum(TEXT, "svcproxy_userspace_accept_errors_total", &[]),
            Some(12.0)
        );
        assert_eq!(
            sum(
                TEXT,
                "svcproxy_userspace_udp_flows_active",
                &[("protocol", "udp")]
            ),
            Some(4000.0)
        );
        // The family's name alone (no `_total`) is not a sample.
        assert_eq!(
            sum(TEXT, "svcproxy_userspace_connections_failed", &[]),
            None
        );
        assert_eq!(
            sum(
                TEXT,
                "svcproxy_userspace_udp_flows_active",
                &[("protocol", "tcp")]
            ),
            None
        );
    }

    #[test]
    fn only_a_200_has_a_body() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nx 1";
        assert_eq!(body_of_ok(ok), Some("x 1"));
        let missing = "HTTP/1.1 404 Not Found\r\n\r\ntry /metrics or /healthz\n";
        assert_eq!(body_of_ok(missing), None);
        assert_eq!(body_of_ok("garbage"), None);
    }
}
