//! Tests of `live.rs`.

use super::*;

#[test]
fn dedup_forgets_beyond_its_window() {
    let mut d = Dedup::new(2);
    assert!(d.first("a"));
    assert!(!d.first("a"));
    assert!(d.first("b"));
    assert!(d.first("c"));
    assert!(d.first("a"), "a fell out of the window");
}

/// A connector that plays a script: each connection attempt takes the
/// next step (a refusal, or frames then an end).
#[derive(Debug)]
struct Scripted {
    steps: VecDeque<Result<Vec<Frame>, Failure>>,
    attempts: Arc<std::sync::Mutex<Vec<Duration>>>,
    start: Instant,
    reconnect_on_rules: bool,
}

#[derive(Debug)]
struct Play(VecDeque<Frame>);

impl Connection for Play {
    async fn read(&mut self, frames: &mut Vec<Frame>) -> Result<(), Failure> {
        match self.0.pop_front() {
            Some(Frame::End { record, failure }) => {
                frames.push(Frame::End { record, failure });
                Ok(())
            }
            Some(f) => {
                frames.push(f);
                Ok(())
            }
            // The script is over: stay open and silent.
            None => std::future::pending().await,
        }
    }
}

impl Connector for Scripted {
    type Connection = Play;
    fn name(&self) -> &'static str {
        "scripted"
    }
    async fn connect(&mut self, _rules: &RuleSnapshot) -> Result<Play, Failure> {
        self.attempts.lock().expect("lock").push(self.start.elapsed());
        match self.steps.pop_front() {
            Some(Ok(frames)) => Ok(Play(frames.into())),
            Some(Err(f)) => Err(f),
            None => std::future::pending().await,
        }
    }
    fn needs_reconnect(&self, _rules: &RuleSnapshot) -> bool {
        self.reconnect_on_rules
    }
}

fn record(id: &str) -> Frame {
    Frame::Record { bytes: format!("{{\"id\":\"{id}\"}}").into_bytes(), dedup: Some(id.into()), checkpoint: None }
}

fn live(steps: Vec<Result<Vec<Frame>, Failure>>) -> (Live<Scripted>, Arc<std::sync::Mutex<Vec<Duration>>>) {
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let connector =
        Scripted { steps: steps.into(), attempts: attempts.clone(), start: Instant::now(), reconnect_on_rules: false };
    let mut cx = SourceContext::detached();
    cx.batching = Batching { max_records: 100, max_wait: Duration::from_millis(50) };
    // Exact waits: the table is asserted here, the jitter in `backoff`.
    let settings = LiveSettings { jitter: false, ..LiveSettings::new(30, 100, 1.0) };
    let live = Live::new(connector, settings, &cx, "scripted".into());
    (live, attempts)
}

/// The loop waits exactly the table's delays between attempts (paused
/// time: the sleeps advance the clock instantly) and stops on 401,
/// marking the collector unhealthy.
#[tokio::test(start_paused = true)]
async fn the_loop_sleeps_by_the_table_and_stops_on_401() {
    let (live, attempts) = live(vec![
        Err(Failure::Network("refused".into())),
        Err(Failure::Network("refused".into())),
        Err(Failure::Http(503, String::new())),
        Err(Failure::Http(503, String::new())),
        Err(Failure::RateLimited(429, String::new())),
        Err(Failure::Unauthorized(401, "bad token".into())),
    ]);
    let (stats, health) = (live.stats(), live.health.clone());
    let (tx, _rx) = async_channel::bounded(10);
    let r = live.drive(tx, CancellationToken::new()).await;
    assert!(matches!(r, Err(SourceError::Unauthorized(ref m)) if m.contains("bad token")), "{r:?}");
    let t: Vec<f64> = attempts.lock().expect("lock").iter().map(|d| d.as_secs_f64()).collect();
    // attempts at 0, +0.25, +0.5 (network), +5, +10 (http), +60 (rate), then 401.
    assert_eq!(t, vec![0.0, 0.25, 0.75, 5.75, 15.75, 75.75]);
    assert_eq!(stats.connects.load(Relaxed), 6);
    assert_eq!(stats.unauthorized.load(Relaxed), 1);
    assert!(health.problem().is_some_and(|p| p.contains("credentials refused")));
}

/// Redeliveries after a reconnect are dropped and counted; an end frame's
/// record is forwarded before the reconnect; records keep their order.
#[tokio::test(start_paused = true)]
async fn redeliveries_are_dropped_and_counted() {
    let end = Frame::End { record: Some(b"{\"bye\":1}".to_vec()), failure: Failure::Network("cut".into()) };
    let (live, attempts) = live(vec![
        Ok(vec![record("1"), Frame::KeepAlive, record("2"), end]),
        Ok(vec![record("2"), record("3"), record("1"), record("4")]),
    ]);
    let metrics = live.metrics.clone();
    let (tx, rx) = async_channel::bounded(100);
    let stop = CancellationToken::new();
    let task = tokio::spawn(live.drive(tx, stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    let summary = task.await.expect("join").expect("runs");
    let mut got = Vec::new();
    while let Ok(b) = rx.try_recv() {
        got.extend(b.iter().map(|(r, _)| String::from_utf8_lossy(r).into_owned()));
    }
    assert_eq!(got, ["{\"id\":\"1\"}", "{\"id\":\"2\"}", "{\"bye\":1}", "{\"id\":\"3\"}", "{\"id\":\"4\"}"]);
    assert_eq!(summary.records, 5);
    assert_eq!(metrics.duplicates_dropped.load(Relaxed), 2);
    assert_eq!(attempts.lock().expect("lock").len(), 2);
}

/// Nothing for the stall timeout: the connection is dropped and a new one
/// opened (network class: +250 ms).
#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_a_stall() {
    let (live, attempts) = live(vec![Ok(vec![record("1")]), Ok(vec![record("2")])]);
    let (tx, _rx) = async_channel::bounded(100);
    let stop = CancellationToken::new();
    let task = tokio::spawn(live.drive(tx, stop.clone()));
    tokio::time::sleep(Duration::from_secs(31)).await;
    stop.cancel();
    task.await.expect("join").expect("runs");
    let t: Vec<f64> = attempts.lock().expect("lock").iter().map(|d| d.as_secs_f64()).collect();
    assert_eq!(t, vec![0.0, 30.25]);
}

/// Rule changes that alter the request coalesce into one reconnect, no
/// sooner than `min_rule_reconnect` after the connect.
#[tokio::test(start_paused = true)]
async fn rule_changes_coalesce_into_one_reconnect() {
    let (mut live, attempts) = live(vec![Ok(vec![record("1")]), Ok(vec![record("2")])]);
    live.connector.reconnect_on_rules = true;
    let (rules_tx, rules_rx) = watch::channel(Arc::new(RuleSnapshot::default()));
    live.rules = rules_rx;
    let (tx, _rx) = async_channel::bounded(100);
    let stop = CancellationToken::new();
    let task = tokio::spawn(live.drive(tx, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..3 {
        rules_tx.send_modify(|_| {});
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.cancel();
    task.await.expect("join").expect("runs");
    let t: Vec<f64> = attempts.lock().expect("lock").iter().map(|d| d.as_secs_f64()).collect();
    assert_eq!(t, vec![0.0, 10.0], "one reconnect, 10 s after the first connect");
}
