use std::sync::Mutex;

use clap::Parser;

use super::*;

/// `ordo serve`'s flags alone, parsed as the real command line parses them.
#[derive(Debug, Parser)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

/// The process environment is shared by every test thread: the tests that set `ORDO_*`
/// variables or let clap read them take turns.
static ENV: Mutex<()> = Mutex::new(());

/// Parses `flags` with the `ORDO_*` variables `env` set, and removes them again.
fn parse_with_env(flags: &[&str], env: &[(&str, &str)]) -> Result<ServeArgs, clap::Error> {
    let _turn = ENV.lock().unwrap_or_else(|p| p.into_inner());
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let parsed = Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()));
    for (k, _) in env {
        std::env::remove_var(k);
    }
    parsed.map(|s| s.args)
}

fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ordo.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn with_file(path: &std::path::Path) -> ServeArgs {
    ServeArgs {
        config: Some(path.to_owned()),
        ..Default::default()
    }
}

#[test]
fn tokens_parse_and_reject_bad_ones() {
    let t = parse_tokens("admin:aaaaaaaa, client:bbbbbbbb").unwrap();
    assert_eq!(t.get("aaaaaaaa"), Some(&Role::Admin));
    assert_eq!(t.get("bbbbbbbb"), Some(&Role::Client));
    assert!(parse_tokens("root:aaaaaaaa").is_err());
    assert!(parse_tokens("admin:short").is_err());
    assert!(parse_tokens("admin").is_err());
    assert!(parse_tokens("admin:aaaaaaaa,client:aaaaaaaa").is_err());
}

#[test]
fn flags_beat_file_beat_defaults_and_open_binds_are_refused() {
    let (_dir, f) =
        config_file("listen = \"127.0.0.1:9000\"\nreservation_ttl = \"2m\"\nrate_limit = 5\n");
    let args = ServeArgs {
        config: Some(f.clone()),
        reservation_ttl: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let s = Settings::load(&args).unwrap();
    assert_eq!(s.server.listen.port(), 9000);
    assert_eq!(s.engine.reservation_ttl, Duration::from_secs(30));
    assert_eq!((s.rate_limit.per_second, s.rate_limit.burst), (5, 5));
    assert_eq!(s.engine.data_dir, PathBuf::from("./data"));

    let open = ServeArgs {
        listen: Some("0.0.0.0:8080".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        Settings::load(&open),
        Err(ConfigError::Invalid { key: "listen", .. })
    ));
    let with_tokens = ServeArgs {
        listen: Some("0.0.0.0:8080".parse().unwrap()),
        auth_tokens: Some("admin:aaaaaaaa".into()),
        ..Default::default()
    };
    assert!(Settings::load(&with_tokens).is_ok());

    std::fs::write(&f, "lisen = \"x\"\n").unwrap();
    assert!(matches!(
        Settings::load(&args),
        Err(ConfigError::File { .. })
    ));
}

#[test]
fn a_flag_beats_its_variable_beats_the_file_beats_the_default() {
    let (_dir, f) = config_file(
        "reservation_ttl = \"5m\"\nsku_mailbox = 100\nactor_threads = 3\nlog_format = \"json\"\n",
    );
    let path = f.to_str().unwrap();
    let args = parse_with_env(
        &["--config", path, "--reservation-ttl", "30s"],
        &[
            ("ORDO_RESERVATION_TTL", "2m"),
            ("ORDO_SKU_MAILBOX", "200"),
            ("ORDO_DURABILITY", "buffered"),
        ],
    )
    .unwrap();
    let s = Settings::load(&args).unwrap();
    // flag over variable over file
    assert_eq!(s.engine.reservation_ttl, Duration::from_secs(30));
    // variable over file
    assert_eq!(s.engine.sku_mailbox, 200);
    // variable over default
    assert_eq!(s.engine.durability, Durability::Buffered);
    // file over default
    assert_eq!(s.engine.actor_threads, 3);
    assert_eq!(s.server.log_format, LogFormat::Json);
    // default
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.webhooks.retry_schedule, retry::DEFAULT_SCHEDULE);

    // The file itself may come from the environment.
    let args = parse_with_env(&[], &[("ORDO_CONFIG", path)]).unwrap();
    assert_eq!(Settings::load(&args).unwrap().engine.sku_mailbox, 100);
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let s = Settings::load(&ServeArgs::default()).unwrap();
    assert_eq!(s.engine.data_dir, PathBuf::from("./data"));
    assert_eq!(s.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.engine.durability, Durability::Sync);
    assert_eq!(s.engine.reservation_ttl, Duration::from_secs(15 * 60));
    assert!(s.auth.is_open());
    assert!(s.auth.allowed_hosts.is_empty());
    assert_eq!(s.server.log_format, LogFormat::Human);
    assert_eq!(s.requests.max_body_bytes, 65_536);
    assert_eq!((s.rate_limit.per_second, s.rate_limit.burst), (0, 0));
    assert_eq!(s.requests.idempotency_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.engine.sku_mailbox, 16_384);
    // Eight attempts over more than a day: at once, 5s, 5m, 30m, 2h, 5h, 10h, 10h.
    let schedule: Vec<u64> = s
        .webhooks
        .retry_schedule
        .iter()
        .map(|d| d.as_secs())
        .collect();
    assert_eq!(schedule, [5, 300, 1800, 7200, 18_000, 36_000, 36_000]);
    assert_eq!(s.webhooks.timeout, Duration::from_secs(10));
    assert_eq!(s.webhooks.ca_file, None);
    assert!(!s.webhooks.allow_private);
    assert_eq!(s.feed.buffer, 1024);
    assert_eq!(s.feed.heartbeat, Duration::from_secs(15));
    assert_eq!(s.feed.slow_timeout, Duration::from_secs(10));
}

#[test]
fn every_flag_is_also_a_file_key() {
    // Every setting (all but `config` itself) read from a file, one value each.
    let (_dir, f) = config_file(
        r#"
data_dir = "/srv/ordo"
listen = "127.0.0.1:9001"
durability = "memory"
reservation_ttl = "90s"
auth_tokens = "admin:aaaaaaaa"
allowed_hosts = "ordo.test"
log_format = "json"
max_body_bytes = 2048
rate_limit = 10
rate_burst = 20
idempotency_ttl = "1h"
http_workers = 3
shutdown_timeout = "5s"
sku_mailbox = 64
actor_threads = 2
webhook_max_attempts = 4
webhook_timeout = "3s"
webhook_backoff = "10ms"
webhook_backoff_max = "15ms"
webhook_ca_file = "/etc/ca.pem"
webhook_allow_private = true
sse_buffer = 8
sse_heartbeat = "2s"
sse_slow_timeout = "250ms"
"#,
    );
    let s = Settings::load(&with_file(&f)).unwrap();
    assert_eq!(s.engine.data_dir, PathBuf::from("/srv/ordo"));
    assert_eq!(s.server.listen.port(), 9001);
    assert_eq!(s.engine.durability, Durability::Memory);
    assert_eq!(s.engine.reservation_ttl, Duration::from_secs(90));
    assert_eq!(s.auth.tokens.get("aaaaaaaa"), Some(&Role::Admin));
    assert_eq!(
        s.auth.allowed_hosts,
        [HostPort::parse("ordo.test").unwrap()]
    );
    assert_eq!(s.server.log_format, LogFormat::Json);
    assert_eq!(s.requests.max_body_bytes, 2048);
    assert_eq!((s.rate_limit.per_second, s.rate_limit.burst), (10, 20));
    assert_eq!(s.requests.idempotency_ttl, Duration::from_secs(3600));
    assert_eq!(s.server.http_workers, 3);
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(5));
    assert_eq!((s.engine.sku_mailbox, s.engine.actor_threads), (64, 2));
    // Four attempts: 10ms doubling, capped at 15ms.
    assert_eq!(
        s.webhooks.retry_schedule,
        [10, 15, 15].map(Duration::from_millis)
    );
    assert_eq!(s.webhooks.timeout, Duration::from_secs(3));
    assert_eq!(s.webhooks.ca_file, Some(PathBuf::from("/etc/ca.pem")));
    assert!(s.webhooks.allow_private);
    assert_eq!(s.feed.buffer, 8);
    assert_eq!(s.feed.heartbeat, Duration::from_secs(2));
    assert_eq!(s.feed.slow_timeout, Duration::from_millis(250));
}

#[test]
fn an_unknown_key_in_the_file_is_refused_by_name() {
    for (text, unknown) in [
        ("lisen = \"127.0.0.1:1\"\n", "lisen"),
        // `config` is a flag only: a file cannot name another file.
        ("config = \"other.toml\"\n", "config"),
    ] {
        let (_dir, f) = config_file(text);
        let e = Settings::load(&with_file(&f)).unwrap_err();
        assert!(matches!(e, ConfigError::File { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("unknown field") && msg.contains(unknown),
            "{msg}"
        );
    }
}

#[test]
fn a_bad_duration_is_refused_naming_the_key_or_flag() {
    let (_dir, f) = config_file("reservation_ttl = \"5 parsecs\"\n");
    let msg = Settings::load(&with_file(&f)).unwrap_err().to_string();
    assert!(
        msg.contains("reservation_ttl") && msg.contains("is not a duration like 15m or 30s"),
        "{msg}"
    );

    let e = parse_with_env(&["--webhook-timeout", "10x"], &[]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    let msg = e.to_string();
    assert!(
        msg.contains("--webhook-timeout") && msg.contains("is not a duration"),
        "{msg}"
    );

    let e = parse_with_env(&[], &[("ORDO_SSE_HEARTBEAT", "soon")]).unwrap_err();
    assert!(e.to_string().contains("is not a duration"), "{e}");
}

#[test]
fn a_bad_durability_or_log_format_is_refused_with_the_choices() {
    let e = parse_with_env(&["--durability", "fast"], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("--durability") && msg.contains("sync, buffered, memory"),
        "{msg}"
    );
    let e = parse_with_env(&["--log-format", "xml"], &[]).unwrap_err();
    assert!(e.to_string().contains("human, json"), "{e}");

    let (_dir, f) = config_file("durability = \"fast\"\n");
    let msg = Settings::load(&with_file(&f)).unwrap_err().to_string();
    assert!(
        msg.contains("durability") && msg.contains("(sync, buffered or memory)"),
        "{msg}"
    );
    std::fs::write(&f, "log_format = \"xml\"\n").unwrap();
    let msg = Settings::load(&with_file(&f)).unwrap_err().to_string();
    assert!(
        msg.contains("log_format") && msg.contains("`human` or `json`"),
        "{msg}"
    );
    std::fs::write(&f, "listen = \"localhost\"\n").unwrap();
    let msg = Settings::load(&with_file(&f)).unwrap_err().to_string();
    assert!(msg.contains("not an address like 127.0.0.1:8080"), "{msg}");
}

#[test]
fn allowed_hosts_are_names_with_optional_ports_and_bad_ones_are_refused_by_key() {
    let hosts = parse_allowed_hosts("Ordo.Local, box:9000,[0:0::1]:81,10.0.0.7").unwrap();
    let spelled: Vec<(&str, Option<u16>)> =
        hosts.iter().map(|h| (h.host.as_str(), h.port)).collect();
    assert_eq!(
        spelled,
        [
            ("ordo.local", None),
            ("box", Some(9000)),
            ("[::1]", Some(81)),
            ("10.0.0.7", None)
        ]
    );
    for bad in [
        "evil/x",
        "a b",
        "host:",
        "host:65536",
        "host:+1",
        "[::1",
        "[nope]:80",
        "a:1:2",
    ] {
        assert!(
            matches!(
                parse_allowed_hosts(bad),
                Err(ConfigError::Invalid {
                    key: "allowed_hosts",
                    ..
                })
            ),
            "{bad}"
        );
    }
    let args = parse_with_env(&[], &[("ORDO_ALLOWED_HOSTS", "ordo.test:8080")]).unwrap();
    let s = Settings::load(&args).unwrap();
    assert_eq!(s.auth.allowed_hosts[0].port, Some(8080));
}

#[test]
fn a_bad_auth_token_is_refused_without_echoing_it() {
    let args = parse_with_env(&["--auth-tokens", "admin:sh0rt!"], &[]).unwrap();
    let msg = Settings::load(&args).unwrap_err().to_string();
    assert!(msg.contains("auth_tokens"), "{msg}");
    assert!(!msg.contains("sh0rt!"), "{msg}");
}

#[test]
fn zero_durations_and_tiny_bodies_are_refused_naming_the_key() {
    let zero = Some(Duration::ZERO);
    for (args, key) in [
        (
            ServeArgs {
                reservation_ttl: zero,
                ..Default::default()
            },
            "reservation_ttl",
        ),
        (
            ServeArgs {
                webhook_timeout: zero,
                ..Default::default()
            },
            "webhook_timeout",
        ),
        (
            ServeArgs {
                sse_heartbeat: zero,
                ..Default::default()
            },
            "sse_heartbeat",
        ),
        (
            ServeArgs {
                max_body_bytes: Some(1023),
                ..Default::default()
            },
            "max_body_bytes",
        ),
    ] {
        match Settings::load(&args) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[test]
fn counts_out_of_range_are_clamped() {
    let s = Settings::load(&ServeArgs {
        http_workers: Some(0),
        actor_threads: Some(10_000),
        sku_mailbox: Some(1),
        webhook_max_attempts: Some(0),
        sse_buffer: Some(0),
        rate_limit: Some(3),
        rate_burst: Some(0),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.server.http_workers, 1);
    assert_eq!(s.engine.actor_threads, 256);
    assert_eq!(s.engine.sku_mailbox, 16);
    assert!(s.webhooks.retry_schedule.is_empty(), "one attempt");
    assert_eq!(s.feed.buffer, 1);
    assert_eq!((s.rate_limit.per_second, s.rate_limit.burst), (3, 1));
}

#[test]
fn the_subtrees_become_the_engine_and_webhook_configs() {
    let s = Settings::load(&ServeArgs {
        data_dir: Some("/tmp/x".into()),
        durability: Some(Durability::Memory),
        reservation_ttl: Some(Duration::from_secs(7)),
        sku_mailbox: Some(99),
        actor_threads: Some(5),
        webhook_max_attempts: Some(3),
        webhook_backoff: Some(Duration::from_millis(20)),
        ..Default::default()
    })
    .unwrap();
    let e = EngineConfig::from(&s.engine);
    assert_eq!(e.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(e.durability, Durability::Memory);
    assert_eq!(e.reservation_ttl, Duration::from_secs(7));
    assert_eq!((e.sku_mailbox, e.workers), (99, 5));
    assert_eq!(e.snapshot_every, EngineConfig::default().snapshot_every);
    let w = WebhookConfig::from(&s.webhooks);
    assert_eq!(w.max_attempts(), 3);
    assert_eq!(w.retry_schedule, [20, 40].map(Duration::from_millis));
    assert_eq!(w.timeout, Duration::from_secs(10));
    assert!(!w.allow_private);
}

#[test]
fn settings_never_print_a_token() {
    let s = Settings::load(&ServeArgs {
        auth_tokens: Some("admin:topsecret1,client:topsecret2".into()),
        ..Default::default()
    })
    .unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("topsecret"), "{shown}");
    assert!(shown.contains("2 redacted"), "{shown}");
}

#[test]
fn a_retry_schedule_is_read_from_every_source_and_fitted_to_max_attempts() {
    let (_dir, f) = config_file("webhook_retry_schedule = \"1s, 2m,3h\"\n");
    let s = Settings::load(&with_file(&f)).unwrap();
    assert_eq!(
        s.webhooks.retry_schedule,
        [1, 120, 3 * 3600].map(Duration::from_secs)
    );
    let args = parse_with_env(
        &[
            "--webhook-retry-schedule",
            "10ms,20ms",
            "--webhook-max-attempts",
            "5",
        ],
        &[],
    )
    .unwrap();
    // Extended with its last wait.
    assert_eq!(
        Settings::load(&args).unwrap().webhooks.retry_schedule,
        [10, 20, 20, 20].map(Duration::from_millis)
    );
    let args = parse_with_env(&["--webhook-max-attempts", "2"], &[]).unwrap();
    // The default, cut.
    assert_eq!(
        Settings::load(&args).unwrap().webhooks.retry_schedule,
        [Duration::from_secs(5)]
    );
    let args = parse_with_env(&[], &[("ORDO_WEBHOOK_RETRY_SCHEDULE", "")]).unwrap();
    assert!(Settings::load(&args)
        .unwrap()
        .webhooks
        .retry_schedule
        .is_empty());

    let e = parse_with_env(&["--webhook-retry-schedule", "5s,soon"], &[]).unwrap_err();
    assert!(e.to_string().contains("is not a duration"), "{e}");
    let both = parse_with_env(
        &["--webhook-retry-schedule", "1s", "--webhook-backoff", "1s"],
        &[],
    )
    .unwrap();
    assert!(matches!(
        Settings::load(&both),
        Err(ConfigError::Invalid {
            key: "webhook_retry_schedule",
            ..
        })
    ));
}

#[test]
fn private_webhook_targets_are_allowed_by_a_bare_flag_or_a_variable() {
    let on = |flags: &[&str], env: &[(&str, &str)]| {
        Settings::load(&parse_with_env(flags, env).unwrap())
            .unwrap()
            .webhooks
            .allow_private
    };
    assert!(!on(&[], &[]));
    assert!(on(&["--webhook-allow-private"], &[]));
    assert!(!on(&["--webhook-allow-private=false"], &[]));
    assert!(on(&[], &[("ORDO_WEBHOOK_ALLOW_PRIVATE", "true")]));
    assert!(on(&[], &[("ORDO_WEBHOOK_ALLOW_PRIVATE", "1")]));
}
