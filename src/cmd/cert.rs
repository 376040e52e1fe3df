//! `flowgate cert status` and `cert renew`: what a running proxy serves,
//! and renewal on request, through its admin API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use flowgate::config::proxy::default_state_dir;
use flowgate::proxy::admin::CertificateView;
use flowgate::proxy::client::{AdminClient, Renewal};
use flowgate::tls::Source;

use super::{parse_duration, print, print_json};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Show the certificates the proxy serves: names, issuer, expiry, next renewal, last error.
    Status(CertStatusArgs),
    /// Renew the ACME certificate now if it is due (or always, with --force), and wait for it.
    Renew(CertRenewArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  flowgate cert status --state-dir /var/lib/flowgate")]
pub struct CertStatusArgs {
    /// The running proxy's state dir (default: the proxy's default).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  flowgate cert renew --force --timeout 5m")]
pub struct CertRenewArgs {
    /// The running proxy's state dir (default: the proxy's default).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Renew even when the certificate is not due.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the new certificate.
    #[arg(long, value_parser = parse_duration, default_value = "2m")]
    pub timeout: Duration,
    /// Print the new certificate as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Status(args) => status(args).await,
        CertCommand::Renew(args) => renew(args).await,
    }
}

async fn status(args: CertStatusArgs) -> anyhow::Result<()> {
    let client = AdminClient::from_state_dir(&args.state_dir.unwrap_or_else(default_state_dir))?;
    let certificates = client.certificates().await?;
    if args.json {
        return print_json(&certificates);
    }
    if certificates.is_empty() {
        print("no certificates: this proxy serves plain HTTP only, or is still obtaining its first one\n")?;
    }
    let text: String = certificates.iter().map(certificate_text).collect();
    print(&text)?;
    Ok(())
}

fn certificate_text(cert: &CertificateView) -> String {
    let info = &cert.info;
    let source = serde_json::to_value(info.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut out = format!(
        "{} ({source})\n  issuer        {}\n  valid until   {} ({} days left)\n  next renewal  {}\n",
        info.domains.join(", "),
        info.issuer,
        info.not_after,
        cert.days_left,
        cert.next_renewal.as_deref().unwrap_or("-"),
    );
    if let Some(error) = &cert.last_error {
        out.push_str(&format!("  last error    {error}\n"));
    }
    out
}

fn acme(certificates: Vec<CertificateView>) -> Option<CertificateView> {
    certificates.into_iter().find(|c| c.info.source == Source::Acme)
}

async fn renew(args: CertRenewArgs) -> anyhow::Result<()> {
    let client = AdminClient::from_state_dir(&args.state_dir.unwrap_or_else(default_state_dir))?;
    let old_serial = acme(client.certificates().await?).map(|c| c.info.serial);
    match client.renew(args.force).await? {
        Renewal::Started => {}
        Renewal::NotDue { due_at } => {
            print(&format!(
                "not due for renewal until {}; use --force to renew now\n",
                due_at.as_deref().unwrap_or("later")
            ))?;
            return Ok(());
        }
    }
    eprintln!(
        "renewing; waiting up to {}s for the new certificate",
        args.timeout.as_secs()
    );
    let started = Instant::now();
    while started.elapsed() < args.timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(cert) = acme(client.certificates().await?) else {
            continue;
        };
        if Some(&cert.info.serial) != old_serial.as_ref() {
            if args.json {
                return print_json(&cert);
            }
            print(&format!("renewed in {:.1}s:\n", started.elapsed().as_secs_f64()))?;
            print(&certificate_text(&cert))?;
            return Ok(());
        }
        if let Some(error) = &cert.last_error {
            anyhow::bail!(
                "renewal failed: {error}; the current certificate keeps serving and the proxy retries by itself"
            );
        }
    }
    anyhow::bail!(
        "no new certificate after {}s; `flowgate cert status` shows the last error, and the proxy keeps retrying",
        args.timeout.as_secs()
    )
}
