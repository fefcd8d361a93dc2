//! Fake trades, one per second, published to the publish API like a real backend would:
//! `POST /publish/` with one item on [`CHANNEL`](crate::CHANNEL) carrying the JSON trade as
//! `ws-message` and as an `http-stream` line, and one on [`SSE_CHANNEL`](crate::SSE_CHANNEL)
//! carrying it as an SSE event.

use http::{Request, header};
use runtime::client::{Endpoint, HttpClient};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The first `transaction_id` (the article's trade).
pub const FIRST_TRANSACTION_ID: u64 = 394_131;

/// A random walk of trades on one exchange.
#[derive(Debug, Clone)]
pub struct TradeFeed {
    next_id: u64,
    price: f64,
}

impl Default for TradeFeed {
    fn default() -> Self {
        TradeFeed::new()
    }
}

impl TradeFeed {
    /// Starts at the article's trade.
    pub fn new() -> TradeFeed {
        TradeFeed {
            next_id: FIRST_TRANSACTION_ID,
            price: 1502.93,
        }
    }

    /// The next trade, dated `now`: exchange, price, volume, value, date (RFC 3339, UTC) and
    /// an increasing `transaction_id`.
    pub fn next_trade(&mut self, now: SystemTime) -> Trade {
        let transaction_id = self.next_id;
        self.next_id += 1;
        // ±0.5 % per trade, kept positive.
        self.price = round(self.price * (1.0 + (fastrand::f64() - 0.5) / 100.0), 2).max(1.0);
        let volume = round(0.001 + fastrand::f64() * 2.0, 8);
        Trade {
            volume,
            price: self.price,
            value: round(self.price * volume, 2),
            date: rfc3339(now),
            transaction_id,
        }
    }
}

/// One trade, shaped like the article's.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    /// Amount traded (BTC).
    pub volume: f64,
    /// Price per unit.
    pub price: f64,
    /// `price × volume`, rounded to cents.
    pub value: f64,
    /// RFC 3339 date.
    pub date: String,
    /// Increasing id.
    pub transaction_id: u64,
}

impl Trade {
    /// The JSON object, fields in the article's order (one line).
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"exchange":"QuadrigaCX","exchange_link":"http://www.quadrigacx.com","volume":{},"price":{},"value":{},"date":{},"transaction_id":{}}}"#,
            Value::from(self.volume),
            Value::from(self.price),
            Value::from(self.value),
            Value::from(self.date.as_str()),
            self.transaction_id
        )
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// The publish request body for one trade. Both items carry the trade's id, and the SSE
/// event names it (`id:`), so a reconnecting EventSource resumes from history.
pub fn publish_body(trade: &Trade) -> Value {
    let line = trade.to_json();
    let id = trade.transaction_id.to_string();
    json!({
        "items": [
            {
                "channel": crate::CHANNEL,
                "id": id,
                "formats": {
                    "ws-message": {"content": line},
                    "http-stream": {"content": format!("{line}\n")},
                }
            },
            {
                "channel": crate::SSE_CHANNEL,
                "id": id,
                "formats": {
                    "http-stream": {"content": format!("id: {id}\nevent: trade\ndata: {line}\n\n")},
                }
            }
        ]
    })
}

/// `2017-02-21T19:13:14Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().cast_signed());
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Publishes a trade every `every` to the publish API at `publish` until `shutdown`.
pub async fn publish_loop(publish: SocketAddr, every: Duration, shutdown: CancellationToken) {
    let client = match HttpClient::new(Duration::from_secs(2), Duration::from_secs(5)) {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "trades publisher cannot start");
            return;
        }
    };
    let endpoint = Endpoint {
        host: publish.ip().to_string(),
        port: publish.port(),
        tls: false,
        insecure: false,
        server_name: None,
    };
    let mut feed = TradeFeed::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let trade = feed.next_trade(SystemTime::now());
        let body = publish_body(&trade).to_string();
        let result = async {
            let sender = client.connect(&endpoint).await.map_err(|e| e.to_string())?;
            let req = Request::post("/publish/")
                .header(header::HOST, publish.to_string())
                .header(header::CONTENT_TYPE, "application/json")
                .body(runtime::server::full(body))
                .map_err(|e| e.to_string())?;
            let resp = client.send(sender, req).await.map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("publish API answered {}", resp.status()))
            }
        }
        .await;
        match result {
            Ok(()) => tracing::debug!(transaction_id = trade.transaction_id, "trade published"),
            Err(err) => tracing::warn!(error = %err, "cannot publish a trade"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_secs(1_487_704_394);
        assert_eq!(rfc3339(t), "2017-02-21T19:13:14Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn trades_have_increasing_ids_and_consistent_values() {
        let mut feed = TradeFeed::new();
        let a = feed.next_trade(UNIX_EPOCH);
        let b = feed.next_trade(UNIX_EPOCH);
        assert_eq!(a.transaction_id, FIRST_TRANSACTION_ID);
        assert_eq!(b.transaction_id, FIRST_TRANSACTION_ID + 1);
        for t in [&a, &b] {
            assert!(t.price > 0.0 && t.volume > 0.0);
            assert!((t.value - t.price * t.volume).abs() < 0.01, "{t:?}");
        }
        let body = publish_body(&a);
        let line = body["items"][0]["formats"]["http-stream"]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(line.starts_with(r#"{"exchange":"QuadrigaCX","#), "{line}");
        assert!(line.ends_with("}\n"));
        let parsed: Value = serde_json::from_str(line.trim()).unwrap_or_default();
        assert_eq!(parsed["transaction_id"], FIRST_TRANSACTION_ID);
        assert_eq!(parsed["price"].as_f64(), Some(a.price));
        assert_eq!(parsed["date"], "1970-01-01T00:00:00Z");
        assert_eq!(
            body["items"][0]["formats"]["ws-message"]["content"].as_str(),
            Some(a.to_json().as_str())
        );
        let id = FIRST_TRANSACTION_ID.to_string();
        assert_eq!(body["items"][0]["id"].as_str(), Some(id.as_str()));
        assert_eq!(body["items"][1]["id"].as_str(), Some(id.as_str()));
        let sse = body["items"][1]["formats"]["http-stream"]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(
            sse.starts_with(&format!("id: {id}\nevent: trade\n")),
            "{sse}"
        );
    }
}
