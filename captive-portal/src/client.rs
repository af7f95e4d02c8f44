//! The operator CLI: an HTTP client of a running authority.

use std::io::Write;

use serde_json::{json, Value};

use missiongate_wire::claims::RAR_MISSION_RESOURCE_ACCESS;
use missiongate_wire::time::format_rfc3339;

use crate::cli::{ClientArgs, KeysCommand, MissionCommand};
use crate::util::now_secs;

/// A failed CLI call; the message is printed on stderr.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

fn out(text: &str) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).map_err(|e| ClientError(format!("stdout: {e}")))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

async fn call(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ClientError> {
    let url = format!("{}{path}", client.url.trim_end_matches('/'));
    let http = reqwest::Client::new();
    let mut req = http.request(method, &url).bearer_auth(&client.operator_token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| ClientError(format!("{url}: {e}")))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| ClientError(format!("{url}: {e}")))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        Ok(value)
    } else {
        Err(ClientError(format!("{url}: HTTP {status}\n{}", pretty(&value))))
    }
}

/// Run a `mission` subcommand.
pub async fn mission(cmd: MissionCommand) -> Result<(), ClientError> {
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    match cmd {
        MissionCommand::Create { client, goal, resources, actions, prefix, expires_in, client_id } => {
            let expires_at = format_rfc3339(now_secs() + i64::from(expires_in));
            let entries: Vec<Value> = resources
                .iter()
                .map(|r| {
                    let mut e = json!({"type": RAR_MISSION_RESOURCE_ACCESS, "resource": r, "actions": actions});
                    if prefix {
                        e["resource_match"] = json!("prefix");
                    }
                    e
                })
                .collect();
            let body = json!({
                "intent": {"goal": goal, "resources": resources, "expires_at": expires_at},
                "authorization_details": entries,
                "client_id": client_id,
            });
            let v = call(&client, post, "/operator/missions", Some(body)).await?;
            out(&pretty(&v))
        }
        MissionCommand::Approve(a) => lifecycle(a, "approve").await,
        MissionCommand::Reject(a) => lifecycle(a, "reject").await,
        MissionCommand::Suspend(a) => lifecycle(a, "suspend").await,
        MissionCommand::Resume(a) => lifecycle(a, "resume").await,
        MissionCommand::Revoke(a) => lifecycle(a, "revoke").await,
        MissionCommand::Complete(a) => lifecycle(a, "complete").await,
        MissionCommand::Show(a) => {
            let v = call(&a.client, get, &format!("/operator/missions/{}", encode_segment(&a.id)), None).await?;
            out(&pretty(&v))
        }
        MissionCommand::List { client, state } => {
            let path = match state {
                Some(s) => format!("/operator/missions?state={}", encode_segment(&s)),
                None => "/operator/missions".to_owned(),
            };
            let v = call(&client, get, &path, None).await?;
            out(&pretty(&v))
        }
        MissionCommand::Token { client, id, dpop_jkt } => {
            let body = dpop_jkt.map(|j| json!({"dpop_jkt": j}));
            let v = call(&client, post, &format!("/operator/missions/{}/token", encode_segment(&id)), body).await?;
            let token = v
                .get("access_token")
                .and_then(Value::as_str)
                .ok_or_else(|| ClientError("the answer has no access_token".into()))?;
            out(token)
        }
    }
}

async fn lifecycle(a: crate::cli::IdArgs, action: &str) -> Result<(), ClientError> {
    let path = format!("/operator/missions/{}/{action}", encode_segment(&a.id));
    let v = call(&a.client, reqwest::Method::POST, &path, None).await?;
    out(&pretty(&v))
}

/// Run a `keys` subcommand.
pub async fn keys(cmd: KeysCommand) -> Result<(), ClientError> {
    match cmd {
        KeysCommand::Rotate { client } => {
            let v = call(&client, reqwest::Method::POST, "/operator/keys/rotate", None).await?;
            out(&pretty(&v))
        }
    }
}

/// Percent-encode a path segment or query value.
fn encode_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
