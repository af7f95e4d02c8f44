//! `captive-portal serve`: open the database, start the authority, serve HTTP until SIGTERM/SIGINT.

use std::io::Write;

use tokio::sync::watch;

use crate::authority::{Authority, Settings};
use crate::cli::ServeArgs;
use crate::http::{router, HttpState};
use crate::store::Store;

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
    };
    let store = Store::open(&args.db).await.map_err(|e| format!("{}: {e}", args.db.display()))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let authority = Authority::open(settings, store.clone(), shutdown_rx).await.map_err(|e| e.to_string())?;
    let maintenance = tokio::spawn(authority.clone().run_maintenance());

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{addr}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    tracing::info!(%addr, issuer = %args.issuer, db = %args.db.display(), "mission authority started");

    let app = router(HttpState::new(authority.clone(), &args.operator_token));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = shutdown_tx.send(true);
        })
        .await;
    if let Err(e) = maintenance.await {
        tracing::warn!(error = %e, "maintenance task ended abnormally");
    }
    store.close().await;
    served.map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}
