//! `kube-svcproxy`: a kube-proxy replacement built on the library (see
//! `examples::svcproxy::kube_proxy`).

#[path = "svcproxy/alloc.rs"]
mod alloc;

fn main() -> std::process::ExitCode {
    examples::svcproxy::kube_proxy::main()
}
