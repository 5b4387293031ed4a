//! mirror-sync: keeps the hosted projects in step with the upstream mirror.
fn main() {
    eprintln!("mirror-sync: not built yet");
    std::process::exit(2);
}
