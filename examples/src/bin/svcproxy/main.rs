//! `svcproxy`: the reference proxy (see `examples::svcproxy`, which runs it).

mod alloc;

fn main() -> std::process::ExitCode {
    examples::svcproxy::main()
}
