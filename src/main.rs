use clap::Parser;

/// mimalloc for every Rust allocation of the `ordo` binary: the order path allocates
/// (requests, events, answers) on one thread and frees on another, where glibc's malloc
/// spent a fifth of the server's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = ordo::cli::Cli::parse();
    // `serve` sets up logging itself, in the format its settings ask for.
    if !matches!(cli.command, ordo::cli::Command::Serve(_)) {
        ordo::telemetry::init(ordo::config::LogFormat::Human);
    }
    let code = match ordo::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`ordo events | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                0
            } else {
                eprintln!("error: {e:#}");
                2
            }
        }
    };
    std::process::exit(code);
}
