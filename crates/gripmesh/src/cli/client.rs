//! The flags of the client subcommands: `publish`, `routes` and `status`.

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// How a client subcommand reaches and authenticates to control's publish API.
#[derive(Debug, Args)]
pub struct ControlClientFlags {
    /// Control's HTTP publish API (`https://` for a TLS front end).
    #[arg(
        long,
        env = "GRIPMESH_CONTROL_URL",
        default_value = "http://127.0.0.1:5561"
    )]
    pub control_url: String,

    /// Send `Authorization: Bearer <token>` (control's --publish-token).
    #[arg(long, env = "GRIPMESH_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Sign a short-lived HS256 JWT with this key (control's --publish-key; literal or
    /// `base64:...`).
    #[arg(long, env = "GRIPMESH_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,

    /// `iss` claim of that JWT (control's --publish-iss).
    #[arg(long, env = "GRIPMESH_PUBLISH_ISS", default_value = "gripmesh")]
    pub publish_iss: String,

    /// Seconds to wait for control's answer.
    #[arg(long, env = "GRIPMESH_CLIENT_TIMEOUT", default_value_t = 10)]
    pub timeout: u64,
}

/// Flags of `gripmesh publish CHANNEL [CONTENT]`.
#[derive(Debug, Args)]
pub struct PublishCmdArgs {
    /// The channel.
    pub channel: String,

    /// The content; `-` or absent: read standard input.
    pub content: Option<String>,

    /// Item id (de-duplication, `prev-id` sequencing, SSE `id:`).
    #[arg(long)]
    pub id: Option<String>,

    /// The id of the previous item on the channel.
    #[arg(long)]
    pub prev_id: Option<String>,

    /// Frame HTTP-stream content as a Server-Sent Event (`event:`/`id:`/`data:` lines and the
    /// blank line); with it the item goes to streams only unless formats are given.
    #[arg(long)]
    pub sse: bool,

    /// SSE event name (with --sse).
    #[arg(long, requires = "sse")]
    pub event: Option<String>,

    /// Close: streams end, WebSockets get a close frame (--code for its code); no content.
    #[arg(long, conflicts_with_all = ["content", "sse", "http_response"])]
    pub close: bool,

    /// Publish as an `http-response` only (answers long-polls).
    #[arg(long)]
    pub http_response: bool,

    /// Formats to publish, comma-separated (`http-response,http-stream,ws-message`); default:
    /// all three, or only `http-stream` with --sse, only `http-response` with --http-response.
    #[arg(long, value_delimiter = ',')]
    pub format: Vec<PublishFormat>,

    /// HTTP status of an `http-response` (default 200), or the WebSocket close code with --close.
    #[arg(long)]
    pub code: Option<u16>,

    /// Header of an `http-response`, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Meta key=value for subscriber filters (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,

    /// Do not append a newline to HTTP content (pushpin-publish appends one).
    #[arg(long)]
    pub no_eol: bool,

    /// Control and credentials.
    #[command(flatten)]
    pub client: ControlClientFlags,
}

/// One publish format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishFormat {
    /// `http-response` (long-polls).
    HttpResponse,
    /// `http-stream` (HTTP streaming and SSE).
    HttpStream,
    /// `ws-message` (WebSockets).
    WsMessage,
}

/// `gripmesh routes get|put|watch`.
#[derive(Debug, Args)]
pub struct RoutesCmdArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: RoutesAction,

    /// Control and credentials.
    #[command(flatten)]
    pub client: ControlClientFlags,
}

/// Route table actions.
#[derive(Debug, Subcommand)]
pub enum RoutesAction {
    /// Print the route table (routes syntax; `--json` for version and routes).
    Get {
        /// Print control's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Replace the route table with FILE (`-`: standard input); validated whole by control.
    Put {
        /// A routes file.
        file: PathBuf,
    },
    /// Print the table now and after every change, until interrupted (gRPC
    /// `RouteService.Watch`).
    Watch {
        /// Control's gRPC listener.
        #[arg(
            long,
            env = "GRIPMESH_CONTROL_GRPC_URL",
            default_value = "http://127.0.0.1:5562"
        )]
        grpc_url: String,
        /// Stop after this many tables (default: never).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Flags of `gripmesh status`.
#[derive(Debug, Args)]
pub struct StatusCmdArgs {
    /// The tier's admin listener.
    #[arg(
        long,
        env = "GRIPMESH_ADMIN_URL",
        default_value = "http://127.0.0.1:9100"
    )]
    pub admin_url: String,

    /// Print the admin listener's `/status.json` as is.
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}
