//! Destinations and their named operations (SPEC §2): what the deployment says about each
//! `:authority` the gateway serves. Read by the config (which builds them) and by authority
//! matching (which names a request's operation), so neither needs the other.

use crate::uri;

/// A named operation: `POST /v1/payments` on a destination is `payments.create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Upper-case method.
    pub method: String,
    /// Normalised path.
    pub path: String,
    /// Prefix match on a segment boundary rather than exact.
    pub prefix: bool,
    /// Action id.
    pub action: String,
    /// Whether this operation is consequential (bound to its `parameter_digest` and decided by the
    /// PDP), overriding the destination's method rule; `None` follows the rule.
    pub consequential: Option<bool>,
    /// Where the values of the constraints an entry may carry live in this operation's
    /// parameters (its JSON body), by constraint name (SPEC §2): [`crate::constraints`].
    pub constraints: crate::constraints::Mappings,
}

/// A destination the gateway knows by its request `:authority`.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Origin used for authority matching and digests.
    pub origin: String,
    /// Audience a token must carry to be used here.
    pub audience: String,
    /// The resource identifier (RFC 8707 / RFC 9728) the deployment gives this destination, normalised
    /// (`origin` + path): an `authorization_details` entry with this `resource` covers every request to
    /// the destination, as one whose `resource` is the destination's origin does (SPEC §2).
    pub resource: Option<String>,
    /// Named operations.
    pub operations: Vec<Operation>,
    /// Upper-case methods that are consequential (bound to a `parameter_digest`). `None` = the default:
    /// every method but GET, HEAD, OPTIONS (and CONNECT, which is destination-level only).
    pub consequential_methods: Option<Vec<String>>,
    /// Lower-case effect-bearing header names, included in the digest.
    pub effect_headers: Vec<String>,
    /// This destination's mode; `None` follows the filter's [`crate::Config::mode`].
    pub mode: Option<Mode>,
    /// Present when the destination is an MCP server (SPEC §7).
    pub mcp: Option<McpServer>,
}

/// How the client's own notifications and responses to an MCP server are decided (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientMessages {
    /// As operations: a notification is `mcp.method.<method>`, a response `mcp.response`, each
    /// matched against the Mission's authority like any other action (the default).
    #[default]
    Decide,
    /// Forwarded for any valid Mission-bound token with an active Mission, whatever its authority.
    Pass,
}

/// A tool the deployment says something about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpTool {
    /// Tool name (`[A-Za-z0-9_.-]{1,128}`).
    pub name: String,
    /// The named action a call of it is (instead of `mcp.tool.<name>`).
    pub action: Option<String>,
    /// Whether a call is consequential; `None` = yes (every `tools/call` is, by default).
    pub consequential: Option<bool>,
    /// Where the values of the constraints an entry may carry live in a call's `arguments`, by
    /// constraint name (SPEC §2): [`crate::constraints`].
    pub constraints: crate::constraints::Mappings,
}

/// A destination that is an MCP server: JSON-RPC requests POSTed to its endpoint are MCP operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServer {
    /// The MCP endpoint path (normalised; matched as named operation paths are).
    pub path: String,
    /// Tools with a named action or a consequential override.
    pub tools: Vec<McpTool>,
    /// Notifications and responses the client sends.
    pub client_messages: ClientMessages,
}

impl McpServer {
    /// Is `path` (the request path, without query) this server's MCP endpoint?
    pub fn is_endpoint(&self, path: &str) -> bool {
        uri::operation_path_matches(&self.path, false, path)
    }

    /// The configured entry of tool `name`.
    pub fn tool(&self, name: &str) -> Option<&McpTool> {
        self.tools.iter().find(|t| t.name == name)
    }
}

/// An MCP tool name (SPEC §7): `[A-Za-z0-9_.-]{1,128}`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Is `method` consequential for a destination with these settings?
/// (`CONNECT` is settled by [`DestinationRef::consequential`] before this is asked.)
pub fn is_consequential(methods: Option<&[String]>, method: &str) -> bool {
    match methods {
        Some(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
        None => !matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "OPTIONS"),
    }
}

/// Whether decisions are enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every denial is answered locally (the default).
    #[default]
    Enforce,
    /// Every decision is computed and recorded, a denial is counted as `shadow.would_deny.<reason>`
    /// and the request is forwarded unchanged; nothing single-use is consumed.
    Shadow,
}

impl Mode {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// A destination, known from config or derived from the request.
#[derive(Debug, Clone)]
pub enum DestinationRef<'a> {
    /// Configured.
    Known(&'a Destination),
    /// Derived: origin only, audience = origin, no named operations.
    Implicit(String),
}

impl DestinationRef<'_> {
    /// Origin.
    pub fn origin(&self) -> &str {
        match self {
            DestinationRef::Known(d) => &d.origin,
            DestinationRef::Implicit(o) => o,
        }
    }
    /// Audience.
    pub fn audience(&self) -> &str {
        match self {
            DestinationRef::Known(d) => &d.audience,
            DestinationRef::Implicit(o) => o,
        }
    }
    /// The configured resource identifier, normalised.
    pub fn resource(&self) -> Option<&str> {
        match self {
            DestinationRef::Known(d) => d.resource.as_deref(),
            DestinationRef::Implicit(_) => None,
        }
    }
    /// Named operations.
    pub fn operations(&self) -> &[Operation] {
        match self {
            DestinationRef::Known(d) => &d.operations,
            DestinationRef::Implicit(_) => &[],
        }
    }
    /// Is this request consequential here? A named operation that says so decides (`CONNECT`
    /// never is: its body is a tunnel); otherwise the destination's methods, by default every
    /// method but GET, HEAD and OPTIONS.
    pub fn consequential(&self, method: &str, path: &str) -> bool {
        if method.eq_ignore_ascii_case("CONNECT") {
            return false;
        }
        if let Some(c) = operation(self.operations(), method, path).and_then(|op| op.consequential) {
            return c;
        }
        match self {
            DestinationRef::Known(d) => is_consequential(d.consequential_methods.as_deref(), method),
            DestinationRef::Implicit(_) => is_consequential(None, method),
        }
    }
    /// The mode requests to this destination are decided in (`default`: the filter's).
    pub fn mode(&self, default: Mode) -> Mode {
        match self {
            DestinationRef::Known(d) => d.mode.unwrap_or(default),
            DestinationRef::Implicit(_) => default,
        }
    }
    /// The MCP server at this destination, if the deployment marks it as one.
    pub fn mcp(&self) -> Option<&McpServer> {
        match self {
            DestinationRef::Known(d) => d.mcp.as_ref(),
            DestinationRef::Implicit(_) => None,
        }
    }
    /// Effect-bearing headers.
    pub fn effect_headers(&self) -> &[String] {
        match self {
            DestinationRef::Known(d) => &d.effect_headers,
            DestinationRef::Implicit(_) => &[],
        }
    }
}

/// The first named operation matching `method` and `path`. The path is compared with ASCII case
/// folded and one trailing slash ignored (SPEC §2): a request that differs from a named operation only
/// by case or a trailing slash is that operation (its action id, its consequential flag), never
/// quietly `http.<method>`; `;` parameters never get this far (the path is refused first).
pub fn operation<'o>(operations: &'o [Operation], method: &str, path: &str) -> Option<&'o Operation> {
    operations
        .iter()
        .find(|op| op.method.eq_ignore_ascii_case(method) && uri::operation_path_matches(&op.path, op.prefix, path))
}
