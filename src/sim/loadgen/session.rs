//! One simulated Flow UI user: a WebSocket session that heartbeats every
//! interval and times the answers, reconnecting when asked to.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::Stats;
use crate::net::{self as target, Stream, Target};
use crate::websocket::frame::Opcode;
use crate::websocket::peer::{self, Peer};

pub struct SessionPlan {
    pub target: Target,
    pub path: String,
    pub heartbeat: Duration,
    pub heartbeat_text: Option<String>,
    pub reconnect: bool,
    pub source: Option<IpAddr>,
    pub deadline: tokio::time::Instant,
}

enum SessionEnd {
    /// The run's time was up and the session closed normally.
    Finished,
    /// The server sent a close frame with this code.
    ClosedByServer(u16),
    /// The connection ended without a close frame.
    Dropped(String),
}

pub async fn run(plan: SessionPlan, stats: Arc<Stats>, opening: Arc<Semaphore>) {
    let mut first = true;
    while tokio::time::Instant::now() < plan.deadline {
        if !first {
            stats.ws_reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let peer = {
            let _permit = opening.acquire().await;
            let handshake = async {
                let stream = target::connect(&plan.target, plan.source).await?;
                peer::connect(stream, &plan.target.host_header, &plan.path, &[]).await
            };
            match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                Ok(Ok(peer)) => peer,
                Ok(Err(e)) => {
                    stats.ws_failed.fetch_add(1, Ordering::Relaxed);
                    stats.note_attempt();
                    stats.error(format!("websocket: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if plan.reconnect { continue } else { return }
                }
                Err(_) => {
                    stats.ws_failed.fetch_add(1, Ordering::Relaxed);
                    stats.note_attempt();
                    stats.error("websocket: handshake took over 10 s".into());
                    if plan.reconnect { continue } else { return }
                }
            }
        };
        stats.ws_opened.fetch_add(1, Ordering::Relaxed);
        stats.note_attempt();
        let open = stats.ws_open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.ws_peak_open.fetch_max(open, Ordering::Relaxed);
        let end = heartbeat_loop(&plan, peer, &stats).await;
        stats.ws_open.fetch_sub(1, Ordering::Relaxed);
        match end {
            SessionEnd::Finished => return,
            SessionEnd::ClosedByServer(code) => {
                *stats
                    .closed_by_server
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(code)
                    .or_default() += 1;
            }
            SessionEnd::Dropped(why) => {
                stats.ws_dropped.fetch_add(1, Ordering::Relaxed);
                stats.error(format!("websocket dropped: {why}"));
            }
        }
        if !plan.reconnect {
            return;
        }
    }
}

async fn heartbeat_loop(plan: &SessionPlan, mut peer: Peer<Stream>, stats: &Stats) -> SessionEnd {
    let epoch = Instant::now();
    // Spread the first heartbeat over the interval so sessions don't beat in step.
    let offset = u64::from_le_bytes(crate::websocket::random_bytes::<8>()) % plan.heartbeat.as_millis().max(1) as u64;
    let mut next_beat = tokio::time::Instant::now() + Duration::from_millis(offset);
    loop {
        tokio::select! {
            frame = peer.read() => match frame {
                Ok(Some(frame)) => match frame.opcode {
                    Opcode::Pong | Opcode::Text => record_answer(stats, epoch, &frame),
                    Opcode::Ping => {
                        let _ = peer.send(Opcode::Pong, true, &frame.payload).await;
                    }
                    Opcode::Close => {
                        let code = frame.close_code().unwrap_or(1005);
                        let _ = peer.send_close(code, "").await;
                        // Wait for the server to close the TCP connection.
                        let _ = tokio::time::timeout(Duration::from_secs(2), peer.read()).await;
                        return SessionEnd::ClosedByServer(code);
                    }
                    _ => {}
                },
                Ok(None) => return SessionEnd::Dropped("connection closed without a close frame".into()),
                Err(e) => return SessionEnd::Dropped(e.to_string()),
            },
            _ = tokio::time::sleep_until(next_beat) => {
                next_beat += plan.heartbeat;
                let stamp = epoch.elapsed().as_micros() as u64;
                let sent = match &plan.heartbeat_text {
                    Some(text) => peer.send(Opcode::Text, true, format!("{text} {stamp}").as_bytes()).await,
                    None => peer.send(Opcode::Ping, true, format!("hb {stamp}").as_bytes()).await,
                };
                if let Err(e) = sent {
                    return SessionEnd::Dropped(e.to_string());
                }
                stats.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
            },
            _ = tokio::time::sleep_until(plan.deadline) => {
                if peer.send_close(1000, "done").await.is_err() {
                    return SessionEnd::Dropped("could not send the close frame".into());
                }
                // Read until the server's close (echoes may still arrive).
                let wait = async {
                    loop {
                        match peer.read().await {
                            Ok(Some(f)) if f.opcode == Opcode::Close => return true,
                            // Answers to heartbeats sent just before the end.
                            Ok(Some(f)) => record_answer(stats, epoch, &f),
                            _ => return false,
                        }
                    }
                };
                return match tokio::time::timeout(Duration::from_secs(3), wait).await {
                    Ok(true) => SessionEnd::Finished,
                    _ => SessionEnd::Dropped("no close reply from the server".into()),
                };
            }
        }
    }
}

/// Counts a pong or echoed text that answers one of our heartbeats.
fn record_answer(stats: &Stats, epoch: Instant, frame: &peer::Frame) {
    if let Some(sent_us) = parse_beat(&frame.payload, frame.opcode == Opcode::Text) {
        stats.heartbeats_acked.fetch_add(1, Ordering::Relaxed);
        let now_us = epoch.elapsed().as_micros() as u64;
        let rtt = Duration::from_micros(now_us.saturating_sub(sent_us));
        Stats::sample(&stats.heartbeat_rtt_us, rtt);
        if stats
            .steady_from
            .get()
            .is_some_and(|from| epoch + Duration::from_micros(sent_us) >= *from)
        {
            Stats::sample(&stats.heartbeat_rtt_steady_us, rtt);
        }
    }
}

/// The send time carried by a heartbeat answer: `hb <micros>` in pongs,
/// `<text> <micros>` in echoed text messages.
fn parse_beat(payload: &[u8], text: bool) -> Option<u64> {
    let s = std::str::from_utf8(payload).ok()?;
    let (label, stamp) = s.rsplit_once(' ')?;
    if !text && label != "hb" {
        return None;
    }
    stamp.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_answers_carry_their_send_time() {
        assert_eq!(parse_beat(b"hb 1234", false), Some(1234));
        assert_eq!(parse_beat(b"heartbeat 99", true), Some(99));
        assert_eq!(parse_beat(b"other 5", false), None);
    }
}
