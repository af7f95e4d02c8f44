//! `captive-portal serve`: open the database, start the authority, serve HTTP until SIGTERM/SIGINT.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::access::{Access, AccessSettings, Approver};
use crate::authority::{Authority, Settings};
use crate::cli::{MigrateArgs, ServeArgs};
use crate::gateway::GatewayAuth;
use crate::http::{router, HttpState};
use crate::notify::{Notifier, NotifySettings, Webhook};
use crate::store::{Backend, DbTarget, Store, StoreError};
use crate::util::sha256;

/// Check an issuer identifier: absolute http(s) URL, no query, fragment or trailing slash.
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("--issuer is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("--issuer must be an http(s) URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() || issuer.ends_with('/') {
        return Err("--issuer must have no query, no fragment and no trailing slash".into());
    }
    Ok(())
}

/// Parse `NAME:TOKEN` approver entries (from `--approver` and `--approver-file`).
pub fn parse_approvers(args: &ServeArgs) -> Result<Vec<Approver>, String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut add = |line: &str, origin: &str| -> Result<(), String> {
        let (name, token) = line.split_once(':').ok_or_else(|| format!("{origin}: an approver is NAME:TOKEN"))?;
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        {
            return Err(format!("{origin}: approver names are 1 to 64 of A-Z a-z 0-9 . _ - @"));
        }
        if token.is_empty() {
            return Err(format!("{origin}: approver {name} has an empty token"));
        }
        entries.push((name.to_owned(), token.to_owned()));
        Ok(())
    };
    for a in &args.approvers {
        if !a.trim().is_empty() {
            add(a.trim(), "--approver")?;
        }
    }
    if let Some(path) = &args.approver_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            add(line, &format!("{}:{}", path.display(), i + 1))?;
        }
    }
    let mut out: Vec<Approver> = Vec::with_capacity(entries.len() + 1);
    for (name, token) in entries {
        if token == args.operator_token {
            return Err(format!(
                "approver {name} uses the operator token; give approvers their own tokens (or use --operator-may-approve)"
            ));
        }
        if args.gateway_credentials.contains(&token) {
            return Err(format!("approver {name} uses a gateway credential; give approvers their own tokens"));
        }
        if token.len() < 16 {
            tracing::warn!(approver = %name, "approver token is shorter than 16 characters");
        }
        if out.iter().any(|a| a.name == name) {
            return Err(format!("approver {name} is given twice"));
        }
        let digest = sha256(token.as_bytes());
        if out.iter().any(|a| a.token_sha256 == digest) {
            return Err(format!("approver {name} shares a token with another approver"));
        }
        out.push(Approver { name, token_sha256: digest });
    }
    if args.operator_may_approve {
        out.push(Approver { name: "operator".into(), token_sha256: sha256(args.operator_token.as_bytes()) });
    }
    Ok(out)
}

/// The gateway credentials and the loopback development flag; refuses a portal no gateway could use.
pub fn gateway_auth(args: &ServeArgs) -> Result<std::sync::Arc<GatewayAuth>, String> {
    let mut creds: Vec<String> = Vec::new();
    for c in &args.gateway_credentials {
        let c = c.trim();
        if c.is_empty() {
            continue;
        }
        if c == args.operator_token {
            return Err("a gateway credential must differ from the operator token".into());
        }
        if !c.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a gateway credential is visible ASCII without spaces (it is sent as a Bearer token)".into());
        }
        if c.len() < 16 {
            tracing::warn!("a gateway credential is shorter than 16 characters");
        }
        if creds.iter().any(|x| x == c) {
            return Err("a gateway credential is given twice".into());
        }
        creds.push(c.to_owned());
    }
    if creds.is_empty() && !args.dev_trust_loopback {
        return Err("no gateway could call the PDP, Mission Status or the event feed: give --gateway-credential \
                    (or, for local development only, --dev-trust-loopback)"
            .into());
    }
    if args.dev_trust_loopback {
        tracing::warn!(
            "--dev-trust-loopback: loopback callers use the PDP, Mission Status and the event feed without a \
             credential; never run this behind a same-host reverse proxy"
        );
    }
    if args.gateway_audiences.is_empty() {
        tracing::warn!("no --gateway-audience: state-event SETs carry no aud, and gateways reject them");
    }
    Ok(std::sync::Arc::new(GatewayAuth::new(&creds, args.dev_trust_loopback, args.max_long_polls_per_caller as usize)))
}

/// The webhooks of approver notifications: http(s) URLs; generic ones need `--notify-secret`.
pub fn notify_settings(args: &ServeArgs) -> Result<NotifySettings, String> {
    let mut webhooks = Vec::new();
    for (urls, format, flag) in
        [(&args.notify_slack, "slack", "--notify-slack"), (&args.notify_webhooks, "generic", "--notify-webhook")]
    {
        for u in urls {
            let u = u.trim();
            if u.is_empty() {
                continue;
            }
            let parsed = url::Url::parse(u).map_err(|e| format!("{flag}: not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(format!("{flag}: an http(s) URL with a host is required"));
            }
            if parsed.scheme() == "http"
                && !parsed.host_str().is_some_and(|h| {
                    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || h == "[::1]"
                })
            {
                tracing::warn!("{flag}: a webhook over plain http outside loopback exposes its messages");
            }
            webhooks.push(Webhook { url: u.to_owned(), format });
        }
    }
    let secret = args.notify_secret.clone().unwrap_or_default();
    if webhooks.iter().any(|w| w.format == "generic") {
        if secret.is_empty() {
            return Err("--notify-webhook needs --notify-secret (the HMAC key receivers verify)".into());
        }
        if secret.len() < 16 {
            tracing::warn!("--notify-secret is shorter than 16 characters");
        }
    }
    Ok(NotifySettings {
        webhooks,
        secret: secret.into_bytes(),
        retry_base_ms: i64::from(args.notify_retry_base_ms),
        max_attempts: i64::from(args.notify_max_attempts),
        retention_seconds: i64::from(args.retention_seconds),
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Whether the `listening on` line went out already (before the database was reachable).
static LISTENING_PRINTED: AtomicBool = AtomicBool::new(false);

/// The line the tests and supervisors wait for, once per process.
fn print_listening(addr: std::net::SocketAddr) -> Result<(), String> {
    if LISTENING_PRINTED.swap(true, Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}").and_then(|()| stdout.flush()).map_err(|e| format!("stdout: {e}"))
}

/// Why opening the database and the authority failed, and whether trying again may help.
struct OpenError {
    message: String,
    /// The database could not be reached (rather than refused the configuration).
    retry: bool,
}

/// Connect (migrating the schema) and open the authority on it.
async fn open(
    target: &DbTarget,
    settings: &Settings,
    shutdown: &watch::Receiver<bool>,
) -> Result<(Store, Arc<Authority>), OpenError> {
    let failed =
        |e: StoreError| OpenError { retry: e.is_unavailable(), message: format!("--db {}: {e}", target.redacted()) };
    match tokio::time::timeout(PROBE_TIMEOUT, Store::probe(target)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed(e)),
        Err(_) => {
            return Err(OpenError {
                retry: true,
                message: format!("--db {}: no connection within {} s", target.redacted(), PROBE_TIMEOUT.as_secs()),
            })
        }
    }
    let store = Store::connect(target).await.map_err(failed)?;
    match Authority::open(settings.clone(), store.clone(), shutdown.clone()).await {
        Ok(authority) => Ok((store, authority)),
        Err(e) => {
            // The authority's errors are flattened to text: ask the database whether it went away.
            let retry = matches!(store.ping().await, Err(ref p) if p.is_unavailable());
            store.close().await;
            Err(OpenError { message: e.to_string(), retry })
        }
    }
}

/// How long one attempt to reach the database at start may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// First and largest pause between attempts to reach the database at start.
const START_RETRY_FIRST: Duration = Duration::from_millis(250);
const START_RETRY_MAX: Duration = Duration::from_secs(5);

/// Keep trying to open the database with backoff; meanwhile answer on `listener`: `/healthz` 200,
/// `/ready` and everything else 503 with `Retry-After` ([`crate::ready::starting_router`]).
/// `None` when a termination signal came first.
async fn wait_for_database(
    listener: tokio::net::TcpListener,
    target: &DbTarget,
    settings: &Settings,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<(Store, Arc<Authority>, tokio::net::TcpListener)>, String> {
    // The same socket twice: the interim server accepts on one copy until the full one takes over.
    let std_listener = listener.into_std().map_err(|e| format!("listener: {e}"))?;
    let interim_listener = std_listener.try_clone().map_err(|e| format!("listener: {e}"))?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| format!("listener: {e}"))?;
    let interim_listener = tokio::net::TcpListener::from_std(interim_listener).map_err(|e| format!("listener: {e}"))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let interim = tokio::spawn(async move {
        let served = axum::serve(interim_listener, crate::ready::starting_router())
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the interim server failed");
        }
    });
    let attempts = async {
        let mut pause = START_RETRY_FIRST;
        let mut attempt: u32 = 1;
        loop {
            tokio::time::sleep(pause).await;
            attempt = attempt.saturating_add(1);
            match open(target, settings, shutdown).await {
                Ok(opened) => {
                    tracing::info!(attempt, db = %target.redacted(), "the database is reachable");
                    return Ok(opened);
                }
                Err(e) if e.retry => {
                    pause = (pause * 2).min(START_RETRY_MAX);
                    tracing::warn!(
                        attempt,
                        retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        error = %e.message,
                        "the database is still unreachable; not ready, retrying"
                    );
                }
                Err(e) => return Err(e.message),
            }
        }
    };
    let outcome = tokio::select! {
        r = attempts => Some(r),
        () = wait_for_signal() => None,
    };
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(5), interim).await.is_err() {
        tracing::warn!("the interim server did not stop within 5 s");
    }
    match outcome {
        Some(Ok((store, authority))) => Ok(Some((store, authority, listener))),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

/// Run the server until a termination signal; in-flight requests finish, long polls answer at once.
pub async fn run(args: ServeArgs) -> Result<(), String> {
    check_issuer(&args.issuer)?;
    if args.operator_token.is_empty() {
        return Err("the operator token must not be empty".into());
    }
    if args.operator_token.len() < 16 {
        tracing::warn!("the operator token is shorter than 16 characters");
    }
    let settings = Settings {
        issuer: args.issuer.clone(),
        status_fresh_seconds: i64::from(args.status_fresh_seconds),
        token_lifetime_seconds: i64::from(args.token_lifetime_seconds),
        longpoll_seconds: u64::from(args.longpoll_seconds),
        event_retention_seconds: i64::from(args.event_retention_seconds),
        gateway_audiences: args.gateway_audiences.clone(),
    };
    let public_url = args.public_url.clone().unwrap_or_else(|| args.issuer.clone());
    check_issuer(&public_url).map_err(|e| e.replace("--issuer", "--public-url"))?;
    let approvers = parse_approvers(&args)?;
    let gateway = gateway_auth(&args)?;
    if args.audit_retention_seconds < args.retention_seconds {
        return Err("--audit-retention-seconds must be at least --retention-seconds".into());
    }
    let access_settings = AccessSettings {
        public_url,
        denial_ttl_seconds: i64::from(args.denial_ttl_seconds),
        task_ttl_seconds: i64::from(args.task_ttl_seconds),
        task_retention_seconds: i64::from(args.task_retention_seconds),
        default_approval_seconds: i64::from(args.default_approval_minutes) * 60,
        max_approval_seconds: i64::from(args.max_approval_seconds),
        max_open_denials_per_mission: i64::from(args.max_open_denials),
        max_open_requests_per_requester: i64::from(args.max_open_requests_per_requester),
        max_idempotency_keys_per_requester: i64::from(args.max_idempotency_keys_per_requester),
        retention_seconds: i64::from(args.retention_seconds),
        audit_retention_seconds: i64::from(args.audit_retention_seconds),
        prune_interval_seconds: i64::from(args.prune_interval_seconds),
        approvers,
    };
    let notify_settings = notify_settings(&args)?;
    let metrics_token = match args.metrics_token.as_deref() {
        None => None,
        Some(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err("--metrics-token is visible ASCII without spaces (it is sent as a Bearer token)".into())
        }
        Some(t) if t == args.operator_token || args.gateway_credentials.iter().any(|c| c.trim() == t) => {
            return Err("--metrics-token must differ from the operator token and every gateway credential".into())
        }
        Some(t) => Some(t.to_owned()),
    };
    let target = DbTarget::parse(&args.db).map_err(|e| format!("--db: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Postgres unreachable at start (down, restarting): keep retrying with backoff, answering
    // `/ready` with 503 meanwhile; configuration errors still end the process at once.
    let (store, authority, listener) = match open(&target, &settings, &shutdown_rx).await {
        Ok((store, authority)) => (store, authority, listener),
        Err(e) if e.retry && matches!(target, DbTarget::Postgres(_)) => {
            tracing::warn!(error = %e.message, "the database is unreachable at start; not ready, retrying");
            print_listening(addr)?;
            match wait_for_database(listener, &target, &settings, &shutdown_rx).await? {
                Some(opened) => opened,
                None => {
                    tracing::info!("stopped before the database was reachable");
                    return Ok(());
                }
            }
        }
        Err(e) => return Err(e.message),
    };
    let maintenance = tokio::spawn(authority.clone().run_maintenance());
    let access = Access::new(access_settings, authority.clone());
    let access_maintenance = tokio::spawn(access.clone().run_maintenance(shutdown_rx.clone()));
    let notifier = Notifier::new(notify_settings, access.clone())?;
    let notifications = tokio::spawn(notifier.run(shutdown_rx.clone()));
    // Several replicas on one Postgres: long polls here wake when any replica commits an event.
    let listener_task = (store.backend() == Backend::Postgres).then(|| {
        let authority = authority.clone();
        let store = store.clone();
        let shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            store
                .listen_events(|seq| authority.observe_committed(seq), std::time::Duration::from_secs(2), shutdown)
                .await;
        })
    });

    print_listening(addr)?;
    tracing::info!(%addr, issuer = %args.issuer, db = %target.redacted(), "mission authority started");

    let app = router(
        HttpState::new(authority.clone(), access, &args.operator_token, gateway)
            .with_metrics_token(metrics_token.as_deref()),
    )
    .merge(crate::ready::router(store.clone()))
    .layer(axum::middleware::from_fn(crate::ready::unavailable_as_503));
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = shutdown_tx.send(true);
        })
        .await;
    if let Err(e) = maintenance.await {
        tracing::warn!(error = %e, "maintenance task ended abnormally");
    }
    if let Err(e) = notifications.await {
        tracing::warn!(error = %e, "notification task ended abnormally");
    }
    if let Some(task) = listener_task {
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "event listener ended abnormally");
        }
    }
    if let Err(e) = access_maintenance.await {
        tracing::warn!(error = %e, "access maintenance task ended abnormally");
    }
    store.close().await;
    served.map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// `captive-portal migrate`: create or update the schema of the database, then exit.
pub async fn migrate(args: MigrateArgs) -> Result<(), String> {
    let target = DbTarget::parse(&args.db)?;
    let store = Store::connect_unmigrated(&target).await.map_err(|e| format!("{}: {e}", target.redacted()))?;
    let result = store.migrate().await.map_err(|e| format!("{}: {e}", target.redacted()));
    store.close().await;
    result?;
    tracing::info!(db = %target.redacted(), "schema up to date");
    Ok(())
}
