//! Command line: `serve` runs the authority; `mission ...` and `keys ...` are HTTP clients of a
//! running one (operator API).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// missiongate control plane: the reference Mission authority.
#[derive(Debug, Parser)]
#[command(name = "captive-portal", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
// Parsed once per process: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Mission authority.
    Serve(ServeArgs),
    /// Manage Missions on a running authority.
    #[command(subcommand)]
    Mission(MissionCommand),
    /// Manage signing keys on a running authority.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Create or bring up to date the database schema, then exit (`serve` also does it at start).
    Migrate(MigrateArgs),
    /// The gateway's own CA, and the certificates of the destinations it inspects (local files).
    #[command(subcommand, name = "gateway-ca")]
    GatewayCa(GatewayCaCommand),
}

/// `gateway-ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum GatewayCaCommand {
    /// Create the CA: `<dir>/ca.pem` (give it to agents) and `<dir>/ca.key.pem` (mode 0600).
    Init {
        /// Directory of the CA files (created if missing; an existing CA is never overwritten).
        #[arg(long, default_value = "envoy/gateway-ca")]
        dir: PathBuf,
    },
    /// Issue a certificate for an inspected destination: `<dir>/<host>.pem` and `<dir>/<host>.key.pem`.
    Issue {
        /// Directory of the CA files.
        #[arg(long, default_value = "envoy/gateway-ca")]
        dir: PathBuf,
        /// Host name of the destination (repeatable; one certificate per host).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=825))]
        days: u32,
    },
}

/// `migrate` options.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database: a SQLite file path (or `sqlite:PATH`; created if missing) or a
    /// `postgres://user:password@host:port/dbname` URL.
    #[arg(long, env = "MISSIONGATE_DATABASE_URL", hide_env_values = true)]
    pub db: String,
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The database: a SQLite file path (or `sqlite:PATH`; created if missing) or a
    /// `postgres://user:password@host:port/dbname` URL, which several replicas may share.
    #[arg(long, env = "MISSIONGATE_DATABASE_URL", hide_env_values = true)]
    pub db: String,
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Issuer identifier: an http(s) URL without query, fragment or trailing slash.
    #[arg(long)]
    pub issuer: String,
    /// Bearer token of the operator API.
    #[arg(long, env = "MISSIONGATE_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: String,
    /// Mission Status answers are fresh for this many seconds (`fresh_until`).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub status_fresh_seconds: u32,
    /// Lifetime of access tokens.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub token_lifetime_seconds: u32,
    /// Longest wait of a long poll on the event feed.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=300))]
    pub longpoll_seconds: u32,
    /// How long state events are kept (at least one hour).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(3600..))]
    pub event_retention_seconds: u32,
    /// Externally visible base URL of the PDP, Access Request Service, Captive Portal API and approver
    /// portal (no query, fragment or trailing slash). Default: the issuer.
    #[arg(long)]
    pub public_url: Option<String>,
    /// A gateway credential (repeatable; the environment variable takes a comma-separated list): the
    /// Bearer token a gateway presents to the PDP, Mission Status and the event feed, which refuse
    /// everyone else with 401. `--pdp-credential` is an older name.
    #[arg(
        long = "gateway-credential",
        alias = "pdp-credential",
        env = "MISSIONGATE_GATEWAY_CREDENTIALS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub gateway_credentials: Vec<String>,
    /// DEVELOPMENT ONLY: also let loopback callers use the PDP, Mission Status and the event feed
    /// without a gateway credential. Never behind a same-host reverse proxy (everything is loopback).
    #[arg(long)]
    pub dev_trust_loopback: bool,
    /// The audience of the gateways that read the event feed (repeatable): the `aud` of every
    /// state-event SET, which a gateway checks against its own.
    #[arg(long = "gateway-audience")]
    pub gateway_audiences: Vec<String>,
    /// Most long polls one gateway caller may hold on the event feed at once (beyond: 429).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_long_polls_per_caller: u32,
    /// Most pending access requests per requester (an agent in a Mission); beyond: 429.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_open_requests_per_requester: u32,
    /// Most stored Idempotency-Keys per requester (kept for `--retention-seconds`); beyond: 429.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_idempotency_keys_per_requester: u32,
    /// Finished access requests, expired denials and Idempotency-Keys are deleted this long after
    /// they ended (and never before a task's handle retention, `--task-retention-seconds`).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(1..=31_536_000))]
    pub retention_seconds: u32,
    /// How often the pruning runs.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub prune_interval_seconds: u32,
    /// Access audit records are deleted this long after they were written (at least
    /// `--retention-seconds`).
    #[arg(long, default_value_t = 7_776_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_retention_seconds: u32,
    /// An approver of the portal, `NAME:TOKEN` (repeatable; the environment variable takes a
    /// comma-separated list).
    #[arg(long = "approver", env = "MISSIONGATE_APPROVERS", hide_env_values = true, value_delimiter = ',')]
    pub approvers: Vec<String>,
    /// A file of approvers, one `NAME:TOKEN` per line (`#` starts a comment).
    #[arg(long)]
    pub approver_file: Option<PathBuf>,
    /// Let the operator token sign in to the portal as the approver `operator` (off by default).
    #[arg(long)]
    pub operator_may_approve: bool,
    /// A requestable denial's hint (`expires_at`, `binding_token`) is valid this long.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub denial_ttl_seconds: u32,
    /// A pending access request expires after this long.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(1..=2_592_000))]
    pub task_ttl_seconds: u32,
    /// A task handle stays readable this long after the task's `expires_at` (then 410).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(0..=2_592_000))]
    pub task_retention_seconds: u32,
    /// Approval duration offered by default on the approver page, in minutes.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=43_200))]
    pub default_approval_minutes: u32,
    /// Longest approval, in seconds.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(60..=2_592_000))]
    pub max_approval_seconds: u32,
    /// Most denials with a live hint per Mission; beyond that, denials are not requestable.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_open_denials: u32,
    /// A Slack-compatible incoming webhook told about access requests (repeatable; the environment
    /// variable takes a comma-separated list). The URL is a secret: it is never logged.
    #[arg(long = "notify-slack", env = "MISSIONGATE_NOTIFY_SLACK", hide_env_values = true, value_delimiter = ',')]
    pub notify_slack: Vec<String>,
    /// A generic webhook that receives signed JSON events about access requests (repeatable; the
    /// environment variable takes a comma-separated list). Needs `--notify-secret`.
    #[arg(long = "notify-webhook", env = "MISSIONGATE_NOTIFY_WEBHOOKS", hide_env_values = true, value_delimiter = ',')]
    pub notify_webhooks: Vec<String>,
    /// The HMAC-SHA-256 key that signs generic webhook events (`X-Missiongate-Signature`).
    #[arg(long, env = "MISSIONGATE_NOTIFY_SECRET", hide_env_values = true)]
    pub notify_secret: Option<String>,
    /// First retry delay of a failed webhook delivery, in milliseconds; it doubles per attempt (at
    /// most 5 minutes).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=300_000))]
    pub notify_retry_base_ms: u32,
    /// Attempts of a webhook delivery before it is abandoned (and counted so).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub notify_max_attempts: u32,
    /// A credential of the metrics scraper: `GET /metrics` answers it (and the operator token).
    #[arg(long, env = "MISSIONGATE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// Where the running authority is and how to authenticate to its operator API.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Base URL of the authority.
    #[arg(long, env = "MISSIONGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token of the operator API.
    #[arg(long, env = "MISSIONGATE_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: String,
}

/// `mission` subcommands.
#[derive(Debug, Subcommand)]
pub enum MissionCommand {
    /// Create a Mission (pending approval); prints it with its client secret as JSON.
    Create {
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
        /// What the Mission is for.
        #[arg(long)]
        goal: String,
        /// A resource URI the agent may use (repeatable); one authority entry per resource.
        #[arg(long = "resource", required = true)]
        resources: Vec<String>,
        /// An action id granted on every resource (repeatable), e.g. `http.get` or `http.*`.
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// Match resources as path prefixes instead of exactly.
        #[arg(long)]
        prefix: bool,
        /// Seconds until the Mission expires.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u32).range(1..))]
        expires_in: u32,
        /// The OAuth client (agent) of the Mission.
        #[arg(long)]
        client_id: String,
    },
    /// Approve a pending Mission.
    Approve(IdArgs),
    /// Reject a pending Mission.
    Reject(IdArgs),
    /// Suspend an active Mission.
    Suspend(IdArgs),
    /// Resume a suspended Mission.
    Resume(IdArgs),
    /// Revoke a Mission.
    Revoke(IdArgs),
    /// Mark a Mission completed.
    Complete(IdArgs),
    /// Show a Mission and its audit trail.
    Show(IdArgs),
    /// List Missions.
    List {
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
        /// Only Missions in this state.
        #[arg(long)]
        state: Option<String>,
    },
    /// Mint an access token for an active Mission; prints the token alone.
    Token {
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
        /// Mission id.
        id: String,
        /// Bind the token to this DPoP key thumbprint (`cnf.jkt`).
        #[arg(long)]
        dpop_jkt: Option<String>,
    },
}

/// A Mission id and the connection.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Mission id.
    pub id: String,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new current signing key (the previous one stays in the JWKS while tokens it signed live).
    Rotate {
        /// Connection.
        #[command(flatten)]
        client: ClientArgs,
    },
}
