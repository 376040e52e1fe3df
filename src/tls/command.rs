//! `flowgate cert status` and `flowgate cert renew`: what a running proxy
//! serves, and renewal on request, through its admin API.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::cli::{CertRenewArgs, CertStatusArgs};
use crate::config::proxy::default_state_dir;
use crate::proxy::client::{AdminClient, error_text};

pub async fn status(args: CertStatusArgs) -> anyhow::Result<()> {
    let client = AdminClient::from_state_dir(&args.state_dir.unwrap_or_else(default_state_dir))?;
    let certificates = client.get("/api/v1/certificates").await?;
    if args.json {
        crate::cli::print(&format!("{}\n", serde_json::to_string_pretty(&certificates)?))?;
        return Ok(());
    }
    let list = certificates.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no certificates: this proxy serves plain HTTP only, or is still obtaining its first one");
    }
    for cert in &list {
        print_certificate(cert);
    }
    Ok(())
}

fn print_certificate(cert: &serde_json::Value) {
    let text = |key: &str| cert[key].as_str().unwrap_or("-").to_string();
    let domains: Vec<String> = cert["domains"]
        .as_array()
        .map(|d| d.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    println!("{} ({})", domains.join(", "), text("source"));
    println!("  issuer        {}", text("issuer"));
    println!(
        "  valid until   {} ({} days left)",
        text("not_after"),
        cert["days_left"]
    );
    println!("  next renewal  {}", text("next_renewal"));
    if let Some(error) = cert["last_error"].as_str() {
        println!("  last error    {error}");
    }
}

fn acme_serial(certificates: &serde_json::Value) -> Option<String> {
    certificates
        .as_array()?
        .iter()
        .find(|c| c["source"] == "acme")
        .and_then(|c| c["serial"].as_str().map(str::to_string))
}

pub async fn renew(args: CertRenewArgs) -> anyhow::Result<()> {
    let client = AdminClient::from_state_dir(&args.state_dir.unwrap_or_else(default_state_dir))?;
    let before = client.get("/api/v1/certificates").await?;
    let old_serial = acme_serial(&before);
    let path = if args.force {
        "/api/v1/certificates/renew?force=1"
    } else {
        "/api/v1/certificates/renew"
    };
    let (status, answer) = client.post(path).await?;
    match status {
        202 => {}
        200 => {
            println!(
                "not due for renewal until {}; use --force to renew now",
                answer["due_at"].as_str().unwrap_or("later")
            );
            return Ok(());
        }
        _ => bail!("{}", error_text(&answer)),
    }
    eprintln!(
        "renewing; waiting up to {}s for the new certificate",
        args.timeout.as_secs()
    );
    let started = Instant::now();
    while started.elapsed() < args.timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = client.get("/api/v1/certificates").await?;
        let Some(cert) = now
            .as_array()
            .and_then(|l| l.iter().find(|c| c["source"] == "acme").cloned())
        else {
            continue;
        };
        if cert["serial"].as_str().map(str::to_string) != old_serial {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&cert)?);
            } else {
                println!("renewed in {:.1}s:", started.elapsed().as_secs_f64());
                print_certificate(&cert);
            }
            return Ok(());
        }
        if let Some(error) = cert["last_error"].as_str() {
            bail!("renewal failed: {error}; the current certificate keeps serving and the proxy retries by itself");
        }
    }
    bail!(
        "no new certificate after {}s; `flowgate cert status` shows the last error, and the proxy keeps retrying",
        args.timeout.as_secs()
    )
}
