//! The welcome app (`examples/welcome.rs`) as a binary target, so that
//! `cargo run --release --features axum --bin welcome` builds only what the app runs: the library
//! and its dependencies, without the benchmark and test dependencies that building an example
//! brings in.

#[path = "../../examples/welcome.rs"]
mod app;

fn main() -> std::process::ExitCode {
    app::main()
}
