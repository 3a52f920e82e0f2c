use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = ordo::cli::Cli::parse();
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
