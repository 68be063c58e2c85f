//! Where the CLI finds groved: its unix socket, or its TCP listener over
//! mutual TLS. These flags show under their own heading in `--help`.

use grove_client::remote::{connect_tcp, Tls};
use grove_client::{socket_path, Client, Error};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// groved's socket [default: $GROVE_SOCKET, else /run/grove/grove.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// groved's TCP listener, HOST:PORT or `[IPv6]:PORT`: connect there
    /// instead of the socket, over mutual TLS with --tls-ca, --tls-cert and
    /// --tls-key (all three), else plain TCP (groved serves that on
    /// loopback only)
    #[arg(long, global = true, env = "GROVE_ADDRESS", value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// With --address: the CA certificate(s) groved's certificate must
    /// chain to (PEM)
    #[arg(long, global = true, env = "GROVE_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// With --address: this client's certificate, from a CA groved trusts (PEM)
    #[arg(long, global = true, env = "GROVE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// With --address: the private key of --tls-cert (PEM)
    #[arg(long, global = true, env = "GROVE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// With --address: the name groved's certificate must carry [default:
    /// the host of --address]
    #[arg(
        long,
        global = true,
        env = "GROVE_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

/// The flags above by name, for finding them on a command line that is
/// being completed (where clap has not parsed it).
pub const FLAGS: [&str; 6] = [
    "--socket",
    "--address",
    "--tls-ca",
    "--tls-cert",
    "--tls-key",
    "--tls-server-name",
];

impl ConnectionArgs {
    /// Connect as the flags say. Must be called inside a `LocalSet`.
    pub async fn connect(self) -> Result<Client, Error> {
        match self.address.as_deref().filter(|a| !a.is_empty()) {
            Some(address) => {
                let tls = Tls::from_parts(
                    self.tls_ca,
                    self.tls_cert,
                    self.tls_key,
                    self.tls_server_name,
                )?;
                connect_tcp(address, tls.as_ref()).await
            }
            None => Client::connect(&socket_path(self.socket)).await,
        }
    }
}
