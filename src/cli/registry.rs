//! What every command that talks to a registry takes: credentials, and
//! the transport flags that override the config file's `[registry.*]`
//! tables.

use std::io::Read;

use clap::Args;

use crate::distribution::{Client, ClientOptions, Credential, HostOptions};
use crate::Error;

/// Registry flags shared by berth-pull and berth-push.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryArgs {
    /// Credentials for the registry: USER or USER:PASSWORD
    #[arg(short, long, value_name = "USER[:PASSWORD]")]
    pub user: Option<String>,
    /// Read the password for --user from standard input
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// Speak plain HTTP to the registry (automatic for localhost and 127.0.0.0/8)
    #[arg(long)]
    pub plain_http: bool,
    /// Accept any TLS certificate from the registry
    #[arg(long)]
    pub insecure: bool,
}

impl RegistryArgs {
    /// A client for these flags and `config` (reads the password from
    /// stdin when asked to).
    pub fn client(&self, config: &crate::config::Config, debug: bool) -> Result<Client, Error> {
        let credential = match &self.user {
            None => None,
            Some(user) => Some(credential(user, self.password_stdin)?),
        };
        registry_client(config, self.plain_http, self.insecure, credential, debug)
    }
}

/// A registry client configured from the config file's `[registry.*]`
/// tables and the command's flags.
pub fn registry_client(
    config: &crate::config::Config,
    plain_http: bool,
    insecure: bool,
    credential: Option<Credential>,
    debug: bool,
) -> Result<Client, Error> {
    let hosts = config
        .registries
        .iter()
        .map(|(host, r)| {
            (
                host.to_string(),
                HostOptions {
                    plain_http: r.plain_http,
                    insecure: r.insecure,
                    ca_file: r.ca_file.clone(),
                },
            )
        })
        .collect();
    Ok(Client::new(ClientOptions {
        plain_http,
        insecure,
        hosts,
        credential,
        debug,
        ..ClientOptions::default()
    })?)
}

fn credential(user: &str, password_stdin: bool) -> Result<Credential, Error> {
    let (name, inline) = match user.split_once(':') {
        Some((n, p)) => (n, Some(p.to_string())),
        None => (user, None),
    };
    if name.is_empty() {
        return Err(Error::Usage("--user needs a user name".into()));
    }
    let password = match (inline, password_stdin) {
        (Some(_), true) => {
            return Err(Error::Usage(
                "give the password either in --user or with --password-stdin, not both".into(),
            ))
        }
        (Some(p), false) => p,
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::Usage(format!("reading the password from stdin: {e}")))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            return Err(Error::Usage(
                "--user needs a password: USER:PASSWORD, or --password-stdin".into(),
            ))
        }
    };
    Ok(Credential {
        username: name.to_string(),
        password,
    })
}
