//! The actix-web welcome app (`examples/welcome_actix.rs`) as a binary target, so that
//! `cargo run --release --features actix --bin welcome_actix` builds only what the app runs, and
//! the tests can run it (`tests/actix.rs`).

#[path = "../../examples/welcome_actix.rs"]
mod app;

fn main() -> std::process::ExitCode {
    app::main()
}
