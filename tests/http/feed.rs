//! The event log: `/v1/events` pages, `/v1/events/live` (SSE) resumes without gap or
//! repeat and cuts off a reader that does not read, `ordo events --follow` prints it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;

use crate::helpers::{
    bench, place_many, seed_catalog, stop_and_verify, tempdir, wait_until, Server, BIN,
};

/// A small live-feed buffer and a short patience, so a reader that stops reading is cut
/// off soon.
const FEED_FLAGS: &[&str] = &["--sse-buffer", "16", "--sse-slow-timeout", "300ms"];

/// Reads SSE frames as (id, event, data) until `stop` says so or the stream ends.
async fn read_sse(
    resp: reqwest::Response,
    mut stop: impl FnMut(&(Option<u64>, String, String)) -> bool,
) -> Vec<(Option<u64>, String, String)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut id, mut ev, mut data) = (None, String::new(), String::new());
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    ev = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_owned();
                }
            }
            if ev.is_empty() {
                continue; // heartbeat comment
            }
            let f = (id, ev, data);
            let done = stop(&f);
            out.push(f);
            if done {
                return out;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_pages_with_a_cursor() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, &[]);
    seed_catalog(&s).await;

    let p1 = s.events(None, Some(3)).await.ok(200);
    assert_eq!(p1["events"].as_array().unwrap().len(), 3);
    assert_eq!(p1["next"], 3);
    let p2 = s.events(Some(3), Some(1)).await.ok(200);
    assert_eq!(p2["events"][0]["seq"], 4);
    s.get("/v1/events?after=x")
        .await
        .problem(422, "invalid_request");

    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_resumes_from_last_event_id_without_gap_or_repeat() {
    let (_t, dir) = tempdir();
    let s = Arc::new(Server::start(&dir, FEED_FLAGS));
    s.create_sku("FEED-1", 1_000_000).await.ok(201);
    place_many(&s, "FEED-1", 300, 16).await;
    let last = s.events(Some(0), Some(1000)).await.ok(200)["next"]
        .as_u64()
        .unwrap();
    assert!(last > 600);

    // Read half, hang up, resume with Last-Event-ID.
    let half = last / 2;
    let first = read_sse(s.live_events(0).await, |f| f.0 == Some(half)).await;
    let second = read_sse(s.live_events_resumed(half).await, |f| f.0 == Some(last)).await;
    let ids: Vec<u64> = first.iter().chain(&second).map(|f| f.0.unwrap()).collect();
    assert_eq!(ids, (1..=last).collect::<Vec<_>>(), "gap or repeat");
    let v: Value = serde_json::from_str(&second[0].2).unwrap();
    assert_eq!(v["seq"], half + 1);
    assert_eq!(second[0].1, v["type"].as_str().unwrap());

    let s = Arc::try_unwrap(s).ok().expect("no other owners");
    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_reader_that_does_not_read_is_cut_off_and_resumes_where_it_was_cut() {
    let (_t, dir) = tempdir();
    let s = Server::start(&dir, FEED_FLAGS);

    // A reader that does not read: many more events than socket buffers hold.
    let (code, _) = bench(&[
        "flash-sale",
        "--url",
        &s.base,
        "--setup",
        "--prefix",
        "SLOW",
        "--stock",
        "1000000",
        "--requests",
        "15000",
        "--concurrency",
        "32",
    ]);
    assert_eq!(code, 0);
    let slow = s.live_events(0).await;
    wait_until("the slow reader to be cut off", 120, || async {
        s.metrics().await.text.contains("ordo_sse_cutoffs_total 1")
    })
    .await;
    let frames = read_sse(slow, |_| false).await;
    let (cut, rest) = frames.split_last().unwrap();
    assert_eq!(cut.1, "cutoff", "{:?}", cut);
    let resume = serde_json::from_str::<Value>(&cut.2).unwrap()["resume_after"]
        .as_u64()
        .unwrap();
    let got: Vec<u64> = rest.iter().map(|f| f.0.unwrap()).collect();
    assert_eq!(got, (1..=resume).collect::<Vec<_>>());
    // Resuming from the cut-off point continues with the next event.
    let again = read_sse(s.live_events(resume).await, |_| true).await;
    assert_eq!(again[0].0, Some(resume + 1));

    stop_and_verify(s, &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_events_follow_prints_the_feed_as_json_lines_from_where_it_is_told() {
    let (_t, dir) = tempdir();
    let s = Arc::new(Server::start(&dir, FEED_FLAGS));
    // More than the 15 events read below, so the follower never waits for one.
    s.create_sku("FEED-1", 1_000_000).await.ok(201);
    place_many(&s, "FEED-1", 20, 4).await;

    let mut follow = Command::new(BIN)
        .args(["events", "--follow", "--url", &s.base, "--after", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<Value> = BufReader::new(follow.stdout.take().unwrap())
        .lines()
        .take(5)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let _ = follow.kill();
    let _ = follow.wait();
    let seqs: Vec<u64> = lines.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![11, 12, 13, 14, 15]);
    assert!(s.metrics().await.text.contains("ordo_sse_readers"));

    let s = Arc::try_unwrap(s).ok().expect("no other owners");
    stop_and_verify(s, &dir);
}
